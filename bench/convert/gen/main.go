// Command gen writes the benchmark reference image: a sparse raw file of
// the given size holding the given amount of data in scattered 1 MiB runs
// (compressible like real disk content: a mix of text-like and random
// bytes), deterministically.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
)

func main() {
	size := flag.Int64("size", 4<<30, "virtual size in bytes")
	data := flag.Int64("data", 1<<30, "bytes of data")
	out := flag.String("o", "ref.raw", "output raw file")
	flag.Parse()
	if err := run(*out, *size, *data); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(name string, size, data int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	const run = 1 << 20
	slots := size / run
	want := data / run
	rng := rand.New(rand.NewPCG(42, 42))
	perm := rng.Perm(int(slots))[:want]
	buf := make([]byte, run)
	words := []byte("the quick brown fox jumps over the lazy dog 0123456789 vdisk backup ")
	for _, s := range perm {
		for i := 0; i < run; i += 4096 {
			if rng.IntN(4) == 0 {
				for j := i; j < i+4096; j += 8 {
					v := rng.Uint64()
					for k := range 8 {
						buf[j+k] = byte(v >> (8 * k))
					}
				}
			} else {
				for j := i; j < i+4096; j++ {
					buf[j] = words[(j*7+int(s))%len(words)]
				}
			}
		}
		if _, err := f.WriteAt(buf, int64(s)*run); err != nil {
			return err
		}
	}
	return f.Close()
}
