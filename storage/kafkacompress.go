package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Kafka's codecs differ from the legacy batch's in framing only: gzip and
// zstd are the same streams, snappy is a raw block (as franz-go and
// librdkafka write it; the Java client's xerial framing is read too), and
// lz4 is the LZ4 frame format rather than a bare block. A Kafka batch does
// not carry its uncompressed size, so decompression is bounded by
// [MaxRawBytes] instead: every codec fails, having produced at most that
// many bytes, on a stream that would decompress to more.

var (
	lz4Writers        sync.Pool // *lz4.Writer
	lz4Readers        sync.Pool // *lz4Reader
	zstdKafkaDecoders sync.Pool // *zstd.Decoder
)

type lz4Reader struct {
	src bytes.Reader
	zr  *lz4.Reader
}

// appendCompressedKafka appends src compressed with c, framed as Kafka
// frames it, to dst.
func appendCompressedKafka(dst []byte, c Compression, src []byte) ([]byte, error) {
	if c != CompressionLZ4 {
		// Gzip and zstd streams and the raw snappy block are Kafka's.
		return appendCompressed(dst, c, src)
	}
	w, _ := lz4Writers.Get().(*lz4.Writer)
	if w == nil {
		w = lz4.NewWriter(nil)
		// 256 KiB blocks keep a pooled writer's buffers small; every
		// Kafka client reads block sizes from 64 KiB to 4 MiB.
		if err := w.Apply(lz4.BlockSizeOption(lz4.Block256Kb)); err != nil {
			return nil, fmt.Errorf("replog: lz4: %w", err)
		}
	}
	out := appendWriter{b: dst}
	w.Reset(&out)
	_, err := w.Write(src)
	if err == nil {
		err = w.Close()
	}
	w.Reset(nil) // the pool must not keep the caller's buffer alive
	lz4Writers.Put(w)
	if err != nil {
		return nil, fmt.Errorf("replog: lz4: %w", err)
	}
	return out.b, nil
}

// errTooLarge reports a records section that decompresses past
// MaxRawBytes.
var errTooLarge = fmt.Errorf("%w: records decompress to more than %d bytes", ErrCorrupt, MaxRawBytes)

// decompressKafka decompresses src, the records section of a Kafka batch
// compressed with c, into dst[:0] (grown as needed) and returns it. It never
// produces or allocates more than about MaxRawBytes, whatever src claims.
func decompressKafka(dst []byte, c Compression, src []byte) ([]byte, error) {
	switch c {
	case CompressionNone:
		return append(dst[:0], src...), nil
	case CompressionGzip:
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
			return nil, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		// The trailer's ISIZE is the size modulo 4 GiB: a hint, not a
		// bound, and one no larger than deflate's best ratio (1032:1)
		// allows, so that a small batch cannot make it allocate much.
		hint := 0
		if len(src) >= 4 {
			hint = min(int(binary.LittleEndian.Uint32(src[len(src)-4:])), MaxRawBytes, 1032*len(src))
		}
		out, err := readLimited(grow(dst[:0], hint), &r.zr)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return out, nil
	case CompressionSnappy:
		return unsnappyKafka(dst[:0], src)
	case CompressionLZ4:
		r, _ := lz4Readers.Get().(*lz4Reader)
		if r == nil {
			r = &lz4Reader{zr: lz4.NewReader(nil)}
		}
		defer func() {
			r.src.Reset(nil)
			r.zr.Reset(nil)
			lz4Readers.Put(r)
		}()
		r.src.Reset(src)
		r.zr.Reset(&r.src)
		// Compressed data rarely expands less than twice.
		out, err := readLimited(grow(dst[:0], min(2*len(src), MaxRawBytes)), r.zr)
		if err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		return out, nil
	case CompressionZstd:
		d, _ := zstdKafkaDecoders.Get().(*zstd.Decoder)
		if d == nil {
			var err error
			// MaxMemory bounds the decoded size of DecodeAll, and the
			// window what a frame may make the decoder keep.
			d, err = zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxMemory(MaxRawBytes),
				zstd.WithDecoderMaxWindow(MaxRawBytes))
			if err != nil {
				return nil, fmt.Errorf("replog: zstd: %w", err)
			}
		}
		out, err := d.DecodeAll(src, dst[:0])
		zstdKafkaDecoders.Put(d)
		switch {
		case errors.Is(err, zstd.ErrDecoderSizeExceeded):
			return nil, errTooLarge
		case err != nil:
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		case len(out) > MaxRawBytes:
			return nil, errTooLarge
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: invalid compression %d", ErrCorrupt, uint8(c))
}

// readLimited reads r to EOF, appending to dst, and fails once more than
// MaxRawBytes have been read.
func readLimited(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) > MaxRawBytes {
				return nil, errTooLarge
			}
			// Doubling, at most to one byte past the limit, which is
			// all it takes to see a stream exceed it.
			dst = grow(dst, min(max(len(dst), 4<<10), MaxRawBytes+1-len(dst)))
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		switch {
		case len(dst) > MaxRawBytes:
			return nil, errTooLarge
		case errors.Is(err, io.EOF):
			return dst, nil
		case err != nil:
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
}

// xerialMagic starts snappy data in the framing of the Java client's snappy
// library: the magic, a version and a compatible version (int32 each), then
// chunks, each an int32 length and a raw snappy block.
const xerialMagic = "\x82SNAPPY\x00"

// unsnappyKafka appends the snappy data src, a raw block or xerial framed
// blocks, decompressed to dst.
func unsnappyKafka(dst, src []byte) ([]byte, error) {
	if !bytes.HasPrefix(src, []byte(xerialMagic)) {
		return unsnappyBlock(dst, src)
	}
	if len(src) < len(xerialMagic)+8 {
		return nil, fmt.Errorf("%w: short xerial snappy header", ErrCorrupt)
	}
	src = src[len(xerialMagic)+8:]
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, fmt.Errorf("%w: short xerial snappy chunk", ErrCorrupt)
		}
		n := binary.BigEndian.Uint32(src)
		if uint64(n) > uint64(len(src)-4) {
			return nil, fmt.Errorf("%w: xerial snappy chunk of %d bytes, %d left", ErrCorrupt, n, len(src)-4)
		}
		var err error
		if dst, err = unsnappyBlock(dst, src[4:4+n]); err != nil {
			return nil, err
		}
		src = src[4+n:]
	}
	return dst, nil
}

// unsnappyBlock appends the raw snappy block src, decompressed, to dst.
func unsnappyBlock(dst, src []byte) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	case n > MaxRawBytes-len(dst):
		return nil, errTooLarge
	}
	dst = grow(dst, n)
	out, err := s2.Decode(dst[len(dst):len(dst)+n], src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	if len(out) != n {
		return nil, fmt.Errorf("%w: snappy block holds %d bytes, its header says %d", ErrCorrupt, len(out), n)
	}
	return dst[:len(dst)+n], nil
}
