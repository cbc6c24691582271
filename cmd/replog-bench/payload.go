package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// payloads returns the values the producers cycle through, for -payload:
//
//   - text: one value, a repeated alphabet (what the command always
//     produced; compresses far better than real data)
//   - zeros: one value of zero bytes
//   - json: distinct JSON orders of about size bytes (ids, customers,
//     amounts, timestamps and items varying from one to the next)
//   - random: distinct incompressible values
//
// json and random values are generated before the run, so that generating
// them costs the produce loop nothing, and a producer's value slices stay
// untouched until acknowledged. There are enough of them (up to 65,536,
// at most 16 MiB) that a batch (1 MiB by default) never holds the same
// value twice unless values are under about 16 bytes: compression then
// sees only what repeats within real data.
func payloads(kind string, size int) ([][]byte, error) {
	if size < 0 {
		return nil, fmt.Errorf("-size %d: want 0 or more", size)
	}
	switch kind {
	case "text":
		v := make([]byte, size)
		for i := range v {
			v[i] = byte('a' + i%26)
		}
		return [][]byte{v}, nil
	case "zeros":
		return [][]byte{make([]byte, size)}, nil
	}
	n := min(1<<16, max(1, (16<<20)/max(size, 1)))
	src := rand.NewChaCha8([32]byte{'r', 'e', 'p', 'l', 'o', 'g'})
	rng := rand.New(src)
	out := make([][]byte, n)
	switch kind {
	case "random":
		buf := make([]byte, n*size)
		_, _ = src.Read(buf)
		for i := range out {
			out[i] = buf[i*size : (i+1)*size : (i+1)*size]
		}
	case "json":
		g := orderGen{rng: rng, ts: time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC).UnixMilli()}
		for i := range out {
			out[i] = g.next(size)
		}
	default:
		return nil, fmt.Errorf("-payload %q: want zeros, text, json or random", kind)
	}
	return out, nil
}

// meanLen is the mean length of vs.
func meanLen(vs [][]byte) float64 {
	n := 0
	for _, v := range vs {
		n += len(v)
	}
	return float64(n) / float64(len(vs))
}

var (
	firstNames = []string{"Alice", "Bruno", "Chloé", "Daniel", "Emma", "Farid", "Giulia", "Hugo", "Inès", "Jonas", "Karin", "Léo", "Maya", "Noah", "Olga", "Pablo"}
	lastNames  = []string{"Martin", "Bernard", "Dubois", "Rossi", "Müller", "Garcia", "Kowalski", "Novak", "Smith", "Jensen", "Silva", "Moreau", "Weber", "Costa"}
	countries  = []string{"FR", "DE", "IT", "ES", "PL", "NL", "BE", "PT", "SE", "CZ"}
	statuses   = []string{"created", "paid", "paid", "paid", "shipped", "delivered", "cancelled"}
	currencies = []string{"EUR", "EUR", "EUR", "GBP", "USD", "CHF"}
)

// orderGen makes JSON orders such as
//
//	{"id":1000003,"ts":1741942801337,"customer":"cus-55907","amount":314.52,
//	 "currency":"EUR","status":"paid","ship_to":{"name":"Inès Weber","country":"FR"},
//	 "items":[{"sku":"SKU-20931","qty":2,"price":19.99},...]}
//
// with the fields taken in that order while the object stays within size
// bytes (100 bytes hold the first five, about 90 bytes), then as many items as fit. The
// first field (id) is always there, so a size under about 20 bytes still
// gives a bigger object.
type orderGen struct {
	rng *rand.Rand
	id  int64
	ts  int64
}

func (g *orderGen) next(size int) []byte {
	g.id += 1 + g.rng.Int64N(3)
	g.ts += g.rng.Int64N(2000)
	r := g.rng
	fields := [][]byte{
		fmt.Appendf(nil, `"id":%d`, 1_000_000+g.id),
		fmt.Appendf(nil, `"ts":%d`, g.ts),
		fmt.Appendf(nil, `"customer":"cus-%05d"`, r.IntN(100_000)),
		fmt.Appendf(nil, `"amount":%d.%02d`, 1+r.IntN(500), r.IntN(100)),
		fmt.Appendf(nil, `"currency":"%s"`, currencies[r.IntN(len(currencies))]),
		fmt.Appendf(nil, `"status":"%s"`, statuses[r.IntN(len(statuses))]),
		fmt.Appendf(nil, `"ship_to":{"name":"%s %s","country":"%s"}`,
			firstNames[r.IntN(len(firstNames))], lastNames[r.IntN(len(lastNames))], countries[r.IntN(len(countries))]),
	}
	b := append(make([]byte, 0, size+64), '{')
	for i, f := range fields {
		// The object so far, a comma, the field and a closing brace.
		if i > 0 && len(b)+1+len(f)+1 > size {
			break
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f...)
	}
	const itemsKey = `,"items":[`
	for n := 0; ; n++ {
		item := fmt.Appendf(nil, `{"sku":"SKU-%05d","qty":%d,"price":%d.%02d}`, r.IntN(100_000), 1+r.IntN(5), 1+r.IntN(200), r.IntN(100))
		extra := len(item) + 2 // the item, then "]}"
		if n == 0 {
			extra += len(itemsKey)
		} else {
			extra++ // a comma
		}
		if len(b)+extra > size {
			if n > 0 {
				b = append(b, ']')
			}
			break
		}
		if n == 0 {
			b = append(b, itemsKey...)
		} else {
			b = append(b, ',')
		}
		b = append(b, item...)
	}
	return append(b, '}')
}
