package nbd_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/nbd"
	"github.com/vdisk-project/vdisk/nbd/nbdtest"
)

// BenchmarkClientReadPipelined reads 256 KiB pieces (nbdcopy's request
// size), 16 in flight, over TCP, plain and with TLS: the client's bulk
// read path (server and client in one process).
func BenchmarkClientReadPipelined(b *testing.B) {
	const size, n, depth = 64 << 20, 256 << 10, 16
	m := disktest.NewMemDisk(size)
	m.WriteAt(bytes.Repeat([]byte{1, 2, 3, 4}, size/4), 0)
	for _, tls := range []bool{false, true} {
		name := "plain"
		if tls {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			s := nbdtest.NewServer(b, m, &nbdtest.Options{TCP: true, TLS: tls, ReadOnly: true})
			c, err := nbd.Dial(context.Background(), s.URI, &nbd.ClientOptions{Thumbprint: s.Thumbprint})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			bufs := make([][]byte, depth)
			for i := range bufs {
				bufs[i] = make([]byte, n)
			}
			fs := make([]*nbd.Future, depth)
			b.SetBytes(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := i % depth
				if fs[k] != nil {
					if err := fs[k].Wait(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				fs[k] = c.ReadAsync(bufs[k], int64(i%(size/n))*n)
				i++
			}
			for _, f := range fs {
				if f != nil {
					f.Wait(context.Background())
				}
			}
		})
	}
}
