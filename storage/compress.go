package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression is the codec of a batch's records section. Its numeric value is
// written to the wire, so existing values never change meaning.
type Compression uint8

// The codecs a batch may use.
const (
	// CompressionNone stores the records section as is.
	CompressionNone Compression = 0
	// CompressionGzip uses gzip (RFC 1952) at the default level.
	CompressionGzip Compression = 1
	// CompressionSnappy uses the Snappy block format.
	CompressionSnappy Compression = 2
	// CompressionLZ4 uses the LZ4 block format (not the frame format): the
	// batch header already carries the uncompressed length and a CRC.
	CompressionLZ4 Compression = 3
	// CompressionZstd uses one or more Zstandard frames.
	CompressionZstd Compression = 4
)

var compressionNames = [...]string{
	CompressionNone:   "none",
	CompressionGzip:   "gzip",
	CompressionSnappy: "snappy",
	CompressionLZ4:    "lz4",
	CompressionZstd:   "zstd",
}

// String returns the name accepted by [ParseCompression], or
// "compression(N)" for an invalid value.
func (c Compression) String() string {
	if c.Valid() {
		return compressionNames[c]
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// Valid reports whether c is a codec this version knows.
func (c Compression) Valid() bool { return int(c) < len(compressionNames) }

// ParseCompression returns the codec named s ("none", "gzip", "snappy",
// "lz4" or "zstd"; exact lower case).
func ParseCompression(s string) (Compression, error) {
	for i, name := range compressionNames {
		if s == name {
			return Compression(i), nil
		}
	}
	return 0, fmt.Errorf("replog: unknown compression %q", s)
}

// zstdWindow is the largest window the encoder uses and the decoder accepts.
// Bounding it bounds the decoder's history buffer for frames larger than the
// window; smaller frames are decoded straight into the output buffer.
const zstdWindow = 8 << 20

// The pools below are caches of reusable codec state, nothing more: any
// value in them may be dropped at any time and a new one built on demand.
var (
	gzipWriters  sync.Pool // *gzipWriter
	gzipReaders  sync.Pool // *gzipReader
	lz4Encoders  sync.Pool // *lz4.Compressor
	zstdEncoders sync.Pool // *zstd.Encoder
	zstdDecoders sync.Pool // *zstd.Decoder
)

type gzipReader struct {
	src bytes.Reader
	zr  gzip.Reader
}

type gzipWriter struct {
	out appendWriter
	zw  *gzip.Writer
}

// appendWriter is an io.Writer appending to a slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// appendCompressed appends src compressed with c to dst.
func appendCompressed(dst []byte, c Compression, src []byte) ([]byte, error) {
	switch c {
	case CompressionNone:
		return append(dst, src...), nil

	case CompressionGzip:
		w, _ := gzipWriters.Get().(*gzipWriter)
		if w == nil {
			w = new(gzipWriter)
			w.zw = gzip.NewWriter(&w.out)
		} else {
			w.zw.Reset(&w.out)
		}
		w.out.b = dst
		_, err := w.zw.Write(src)
		if err == nil {
			err = w.zw.Close()
		}
		dst = w.out.b
		w.out.b = nil // the pool must not keep the caller's buffer alive
		gzipWriters.Put(w)
		if err != nil {
			return nil, fmt.Errorf("replog: gzip: %w", err)
		}
		return dst, nil

	case CompressionSnappy:
		n := s2.MaxEncodedLen(len(src))
		if n < 0 {
			return nil, fmt.Errorf("%w: %d bytes is too large for snappy", ErrBatchTooLarge, len(src))
		}
		dst = grow(dst, n)
		out := s2.EncodeSnappy(dst[len(dst):len(dst)+n], src)
		return dst[:len(dst)+len(out)], nil

	case CompressionLZ4:
		n := lz4.CompressBlockBound(len(src))
		dst = grow(dst, n)
		enc, _ := lz4Encoders.Get().(*lz4.Compressor)
		if enc == nil {
			enc = new(lz4.Compressor)
		}
		// With a destination of CompressBlockBound bytes the block always
		// fits, even when src is incompressible.
		m, err := enc.CompressBlock(src, dst[len(dst):len(dst)+n])
		lz4Encoders.Put(enc)
		if err != nil {
			return nil, fmt.Errorf("replog: lz4: %w", err)
		}
		return dst[:len(dst)+m], nil

	case CompressionZstd:
		enc, _ := zstdEncoders.Get().(*zstd.Encoder)
		if enc == nil {
			var err error
			enc, err = zstd.NewWriter(nil,
				zstd.WithEncoderConcurrency(1),
				zstd.WithWindowSize(zstdWindow))
			if err != nil {
				return nil, fmt.Errorf("replog: zstd: %w", err)
			}
		}
		dst = enc.EncodeAll(src, dst)
		zstdEncoders.Put(enc)
		return dst, nil
	}
	return nil, fmt.Errorf("replog: invalid compression %d", uint8(c))
}

// grow returns dst with room for at least n more bytes.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	out := make([]byte, len(dst), len(dst)+n)
	copy(out, dst)
	return out
}

// decompressInto decompresses src, compressed with c, into dst. The output
// must be exactly len(dst) bytes: shorter or longer output is ErrCorrupt.
//
// No codec is allowed to write more than len(dst) bytes or to allocate in
// proportion to what src claims to hold, because the length in the batch
// header is the only bound and src may lie about it (a compression bomb).
func decompressInto(dst []byte, c Compression, src []byte) error {
	switch c {
	case CompressionNone:
		if len(src) != len(dst) {
			return fmt.Errorf("%w: records section is %d bytes, header says %d", ErrCorrupt, len(src), len(dst))
		}
		copy(dst, src)
		return nil

	case CompressionGzip:
		return gunzipInto(dst, src)

	case CompressionSnappy:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
		if n != len(dst) {
			return fmt.Errorf("%w: snappy block holds %d bytes, header says %d", ErrCorrupt, n, len(dst))
		}
		out, err := s2.Decode(dst, src)
		if err != nil {
			return fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
		if len(out) != len(dst) {
			return fmt.Errorf("%w: snappy block holds %d bytes, header says %d", ErrCorrupt, len(out), len(dst))
		}
		return nil

	case CompressionLZ4:
		n, err := lz4.UncompressBlock(src, dst)
		if err != nil {
			return fmt.Errorf("%w: lz4: %v", ErrCorrupt, err)
		}
		if n != len(dst) {
			return fmt.Errorf("%w: lz4 block holds %d bytes, header says %d", ErrCorrupt, n, len(dst))
		}
		return nil

	case CompressionZstd:
		return unzstdInto(dst, src)
	}
	return fmt.Errorf("%w: invalid compression %d", ErrCorrupt, uint8(c))
}

func gunzipInto(dst, src []byte) error {
	r, _ := gzipReaders.Get().(*gzipReader)
	if r == nil {
		r = new(gzipReader)
	}
	defer func() {
		r.src.Reset(nil)
		gzipReaders.Put(r)
	}()
	r.src.Reset(src)
	if err := r.zr.Reset(&r.src); err != nil {
		return fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
	}
	if _, err := io.ReadFull(&r.zr, dst); err != nil {
		return fmt.Errorf("%w: gzip: records section shorter than header says (%d bytes): %v", ErrCorrupt, len(dst), err)
	}
	// Reading to EOF verifies the gzip checksum and proves there is nothing
	// beyond len(dst); one extra byte is all we ever inflate past it.
	var one [1]byte
	switch _, err := io.ReadFull(&r.zr, one[:]); {
	case err == nil:
		return fmt.Errorf("%w: gzip: records section longer than header says (%d bytes)", ErrCorrupt, len(dst))
	case errors.Is(err, io.EOF):
		return nil
	default:
		return fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
	}
}

func unzstdInto(dst, src []byte) error {
	d, _ := zstdDecoders.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(MaxRawBytes),
			zstd.WithDecoderMaxWindow(zstdWindow),
			// Never grow the output past cap(dst): a frame that decodes
			// to more than the header claims fails instead of allocating.
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return fmt.Errorf("replog: zstd: %w", err)
		}
	}
	out, err := d.DecodeAll(src, dst[:0:len(dst)])
	zstdDecoders.Put(d)
	if err != nil {
		return fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	if len(out) != len(dst) {
		return fmt.Errorf("%w: zstd frames hold %d bytes, header says %d", ErrCorrupt, len(out), len(dst))
	}
	if len(out) > 0 && &out[0] != &dst[0] {
		// Unreachable with the cap limit; checked so that a change in the
		// library cannot silently hand back bytes outside dst.
		copy(dst, out)
	}
	return nil
}
