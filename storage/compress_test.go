package storage

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/stretchr/testify/require"
)

func TestCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 100_000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	inputs := map[string][]byte{
		"one byte":     {7},
		"zeros":        make([]byte, 1<<20),
		"random":       random,
		"text":         bytes.Repeat([]byte("the quick brown fox "), 5000),
		"over window":  bytes.Repeat(random[:1000], zstdWindow/1000+100),
		"prefix reuse": append(append([]byte(nil), random...), random...),
	}
	for _, c := range allCompressions {
		for name, in := range inputs {
			t.Run(c.String()+"/"+name, func(t *testing.T) {
				prefix := []byte("prefix")
				out, err := appendCompressed(append([]byte(nil), prefix...), c, in)
				require.NoError(t, err)
				require.Equal(t, prefix, out[:len(prefix)])

				got := make([]byte, len(in))
				require.NoError(t, decompressInto(got, c, out[len(prefix):]))
				require.Equal(t, in, got)

				// The output must be exactly as long as the caller says.
				require.ErrorIs(t, decompressInto(make([]byte, len(in)-1), c, out[len(prefix):]), ErrCorrupt)
				require.ErrorIs(t, decompressInto(make([]byte, len(in)+1), c, out[len(prefix):]), ErrCorrupt)
			})
		}
	}
}

func TestCodecGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range allCompressions[1:] {
		for range 200 {
			src := make([]byte, rng.IntN(64))
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			err := decompressInto(make([]byte, 1+rng.IntN(256)), c, src)
			require.ErrorIs(t, err, ErrCorrupt, "%s of %x", c, src)
		}
	}
}

// bombBatch wraps records, a records section compressed with c that
// decompresses to far more than claim bytes, in a batch that claims claim
// bytes and carries a correct CRC, so that only the decompression guard
// stands between it and a huge allocation.
func bombBatch(c Compression, records []byte, claim uint32) []byte {
	b := make([]byte, legacyHeaderSize, legacyHeaderSize+len(records))
	b = append(b, records...)
	le := binary.LittleEndian
	le.PutUint32(b[8:], uint32(len(b)))
	b[16] = VersionLegacy
	b[17] = byte(c)
	le.PutUint32(b[20:], 1)
	le.PutUint32(b[56:], claim)
	resign(b)
	return b
}

func TestCompressionBomb(t *testing.T) {
	const bombSize = 100 << 20
	zeros := make([]byte, bombSize)

	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	require.NoError(t, err)
	_, err = zw.Write(zeros)
	require.NoError(t, err)
	require.NoError(t, zw.Close())

	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	require.NoError(t, err)
	zstdWithSize := zenc.EncodeAll(zeros, nil)
	// The streaming encoder does not know the size up front, so its frame
	// has no content size and the decoder cannot reject it early.
	var zs bytes.Buffer
	zenc.Reset(&zs)
	_, err = zenc.Write(zeros)
	require.NoError(t, err)
	require.NoError(t, zenc.Close())
	hdr := zstd.Header{}
	require.NoError(t, hdr.Decode(zs.Bytes()))
	require.False(t, hdr.HasFCS)

	// The largest block the formats allow without a length on the wire
	// that the decoder checks up front.
	lz4Zeros := make([]byte, lz4.CompressBlockBound(4<<20))
	n, err := lz4.CompressBlock(zeros[:4<<20], lz4Zeros, nil)
	require.NoError(t, err)

	cases := []struct {
		name    string
		c       Compression
		records []byte
	}{
		{"gzip", CompressionGzip, gz.Bytes()},
		{"zstd with content size", CompressionZstd, zstdWithSize},
		{"zstd without content size", CompressionZstd, zs.Bytes()},
		{"snappy", CompressionSnappy, s2.EncodeSnappy(nil, zeros[:4<<20])},
		{"lz4", CompressionLZ4, lz4Zeros[:n]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := bombBatch(tc.c, tc.records, 1<<10)
			require.LessOrEqual(t, len(b), MaxBatchBytes)

			// Warm the codec pools so that only the decode is measured.
			requireCorrupt(t, b)

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Validate(b)
			require.ErrorIs(t, err, ErrCorrupt)
			_, _, err = DecodeRecords(b, 0, nil)
			require.ErrorIs(t, err, ErrCorrupt)
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			require.Less(t, allocated, uint64(2<<20), "allocated %d bytes decoding a bomb claiming 1 KiB", allocated)
		})
	}
}
