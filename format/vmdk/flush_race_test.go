package vmdk

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentFlushes writes and flushes from many goroutines at once (as
// NBD FUA writes do) across many grain tables, then reopens the image: every
// write that returned must be referenced by the tables on disk. Two flushes
// that wrote the same table out of order once left an older copy on disk.
func TestConcurrentFlushes(t *testing.T) {
	for _, sf := range []Subformat{MonolithicSparse, TwoGbMaxExtentSparse, VMFSSparse} {
		t.Run(string(sf), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			const (
				tables = 32
				grain  = 64 << 10
				span   = 512 * grain // bytes one grain table covers
				size   = tables * span
			)
			path := filepath.Join(dir, "d.vmdk")
			o := &CreateOptions{Subformat: sf, SplitSize: 64 << 20}
			if sf == VMFSSparse {
				base, err := Create(ctx, filepath.Join(dir, "base.vmdk"), size, &CreateOptions{Subformat: VMFSThin})
				if err != nil {
					t.Fatal(err)
				}
				base.Close()
				o = &CreateOptions{Subformat: sf, Parent: filepath.Join(dir, "base.vmdk")}
			}
			d, err := Create(ctx, path, size, o)
			if err != nil {
				t.Fatal(err)
			}
			// Writer w owns one 4 KiB block in every table, at a place
			// of its own, and writes it again and again.
			const writers = 16
			want := make([][]byte, writers*tables)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for round := range 6 {
						for tb := range tables {
							p := bytes.Repeat([]byte{byte(w*7 + round + tb)}, 4096)
							off := int64(tb)*span + int64(w)*grain*3
							if _, err := d.WriteAt(p, off); err != nil {
								t.Error(err)
								return
							}
							if err := d.Flush(); err != nil {
								t.Error(err)
								return
							}
							want[w*tables+tb] = p
						}
					}
				})
			}
			wg.Wait()
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d, err = Open(ctx, path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			bad := 0
			got := make([]byte, 4096)
			for w := range writers {
				for tb := range tables {
					off := int64(tb)*span + int64(w)*grain*3
					if _, err := d.ReadAt(got, off); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want[w*tables+tb]) {
						bad++
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d acknowledged writes are gone after reopening", bad, writers*tables)
			}
			rep, err := Check(ctx, path, nil)
			if err != nil || rep.Errors > 0 {
				t.Errorf("check: %v %s", err, fmt.Sprint(rep.Problems))
			}
		})
	}
}
