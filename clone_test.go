package vdisk_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// cloneSource makes a local monolithicSparse disk of size bytes holding
// scattered random 64 KiB blocks and a sub-grain write.
func cloneSource(t *testing.T, c *vdisk.Conn, path string, size int64) vdisk.Spec {
	t.Helper()
	ctx := context.Background()
	src := vdisk.Spec{Path: path}
	if err := c.Create(ctx, src, vdisk.CreateParams{Capacity: size}); err != nil {
		t.Fatal(err)
	}
	h, err := c.Open(ctx, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	p := make([]byte, 64<<10)
	for range 24 {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := h.WriteAt(p, rng.Int64N(size/int64(len(p)))*int64(len(p))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.WriteAt(p[:1536], size-4096); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	return src
}

// TestCloneEveryType clones a local disk into every type a local Create
// makes (VixDiskLib_Clone with each disk type), streamOptimized included,
// which is written only as it is made; the copies read back equal and
// qemu-img checks them clean and reads the same bytes.
func TestCloneEveryType(t *testing.T) {
	ctx := context.Background()
	testenv.Tool(t, "qemu-img")
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := t.TempDir()
	const size = 48 << 20
	src := cloneSource(t, c, filepath.Join(dir, "src.vmdk"), size)
	raw := filepath.Join(dir, "src.raw")
	testenv.Run(t, "qemu-img", "convert", "-O", "raw", src.Path, raw)
	for _, typ := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
		"streamOptimized", "vmfs", "vmfsThin", "seSparse", "raw"} {
		t.Run(typ, func(t *testing.T) {
			dst := vdisk.Spec{Path: filepath.Join(dir, typ+".vmdk")}
			var last int64
			st, err := vdisk.Clone(ctx, c, dst, c, src, &vdisk.CloneOptions{Create: vdisk.CreateParams{Type: typ},
				Progress: func(done, total int64) { last = done }})
			if err != nil {
				t.Fatal(err)
			}
			if last != size || st.Read == 0 {
				t.Errorf("progress ended at %d of %d (stats %+v)", last, size, st)
			}
			a, err := c.Open(ctx, src, vdisk.OpenReadOnly)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := c.Open(ctx, dst, vdisk.OpenReadOnly)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Size() != size {
				t.Fatalf("the clone holds %d bytes, want %d", b.Size(), size)
			}
			if off, err := disk.Compare(ctx, a, b, nil); err != nil || off >= 0 {
				t.Fatalf("the clone differs at %d (%v)", off, err)
			}
			f := "vmdk"
			switch typ {
			case "raw":
				f = "raw"
			case "seSparse":
				// qemu-img reads SEsparse but does not check it.
			default:
				testenv.Run(t, "qemu-img", "check", dst.Path)
				info := testenv.Run(t, "qemu-img", "info", "--output=json", dst.Path)
				want := typ
				if typ == "vmfsThin" {
					want = "vmfs"
				}
				if !strings.Contains(info, `"create-type": "`+want+`"`) {
					t.Errorf("qemu-img info: want create type %s\n%s", want, info)
				}
			}
			testenv.Run(t, "qemu-img", "compare", "-f", "raw", "-F", f, raw, dst.Path)
		})
	}
}

// TestCloneFailureLeavesNothing cancels clones part way, into a one-file
// and a split destination: Clone fails and no destination file is left
// behind, so that a retry is not refused as "file exists".
func TestCloneFailureLeavesNothing(t *testing.T) {
	c, err := vdisk.Connect(context.Background(), vdisk.ConnectParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := t.TempDir()
	src := cloneSource(t, c, filepath.Join(dir, "src.vmdk"), 48<<20)
	for _, typ := range []string{"monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse"} {
		t.Run(typ, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := filepath.Join(t.TempDir(), "dst.vmdk")
			_, err := vdisk.Clone(ctx, c, vdisk.Spec{Path: out}, c, src, &vdisk.CloneOptions{Create: vdisk.CreateParams{Type: typ},
				Progress: func(done, total int64) {
					if done > 0 {
						cancel()
					}
				}})
			if err == nil {
				t.Fatal("a cancelled clone succeeded")
			}
			left, _ := os.ReadDir(filepath.Dir(out))
			for _, e := range left {
				t.Errorf("a failed clone left %s behind", e.Name())
			}
		})
	}
	t.Run("smaller", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "dst.vmdk")
		_, err := vdisk.Clone(context.Background(), c, vdisk.Spec{Path: out}, c, src, &vdisk.CloneOptions{Create: vdisk.CreateParams{Capacity: 16 << 20}})
		if disk.CodeOf(err) != disk.ErrInvalid {
			t.Fatalf("a clone smaller than its source: got %v, want ErrInvalid", err)
		}
		if _, err := os.Lstat(out); err == nil {
			t.Error("the refused clone left its destination behind")
		}
	})
}
