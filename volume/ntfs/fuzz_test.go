package ntfs

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rebuild testdata/seed.img.gz with mkntfs and ntfs-3g")

const seedPath = "testdata/seed.img.gz"

// makeSeed builds the small volume the fuzzer starts from: a few of each
// structure in 2 MiB.
func makeSeed(t *testing.T) []byte {
	img := mkntfs(t, t.TempDir(), 2<<20, "Seed")
	mnt, umount := mountNTFS(t, img, "streams_interface=xattr,compression")
	w := func(name string, b []byte) {
		p := filepath.Join(mnt, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	w("a.txt", []byte("resident\n"))
	w("b.bin", bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 3000))
	for i := range 40 {
		w(fmt.Sprintf("d/entry-with-a-long-name-%02d", i), []byte{byte(i)})
	}
	if err := os.Mkdir(filepath.Join(mnt, "c"), 0o777); err != nil {
		t.Fatal(err)
	}
	setAttrib(t, filepath.Join(mnt, "c"), fileCompressed)
	w("c/z", bytes.Repeat([]byte("compress me "), 8000))
	sp, err := os.Create(filepath.Join(mnt, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	sp.WriteAt([]byte("end"), 1<<20)
	sp.Close()
	os.Link(filepath.Join(mnt, "a.txt"), filepath.Join(mnt, "d/hard"))
	os.Symlink("../a.txt", filepath.Join(mnt, "d/sym"))
	unix.Setxattr(filepath.Join(mnt, "a.txt"), "user.s", []byte("stream"), 0)
	w("j", nil)
	unix.Setxattr(filepath.Join(mnt, "j"), "system.ntfs_reparse_data", reparseLink(`b.bin`, `b.bin`, true, false), 0)
	umount()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var seedOnce = sync.OnceValues(func() ([]byte, error) {
	zb, err := os.ReadFile(seedPath)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(zb))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(zr, 4<<20))
})

func TestSeedImage(t *testing.T) {
	if *update {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(makeSeed(t))
		zw.Close()
		if err := os.WriteFile(seedPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := seedOnce()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a.txt": "resident\n", "d/sym": "resident\n", "d/entry-with-a-long-name-39": "'"} {
		if b, err := fs.ReadFile(f, name); err != nil || string(b) != want {
			t.Errorf("ReadFile(%q) = %q, %v; want %q", name, b, err, want)
		}
	}
	if err := walkAll(f); err != nil {
		t.Errorf("walk: %v", err)
	}
}

// walkAll opens and reads everything (bounded), as vdisk ls/extract would.
func walkAll(f *FS) error {
	var first error
	n := 0
	buf := make([]byte, 64<<10)
	f.Statfs()
	fs.WalkDir(f, ".", func(p string, d fs.DirEntry, err error) error {
		if n++; n > 2000 {
			return fs.SkipAll
		}
		if err != nil {
			if first == nil {
				first = err
			}
			return nil
		}
		f.Xattrs(p)
		if _, err := d.Info(); err != nil {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			f.ReadLink(p)
			f.Stat(p)
			return nil
		}
		if d.IsDir() {
			return nil
		}
		fl, err := f.Open(p)
		if err != nil {
			return nil
		}
		defer fl.Close()
		ra := fl.(io.ReaderAt)
		for off := int64(0); off < 4<<20; off += int64(len(buf)) {
			if _, err := ra.ReadAt(buf, off); err != nil {
				break
			}
		}
		return nil
	})
	return first
}

// tracer records which sectors a walk reads.
type tracer struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads map[int64]bool
}

func (t *tracer) ReadAt(b []byte, off int64) (int, error) {
	t.mu.Lock()
	for s := off / 512; s < (off+int64(len(b))+511)/512; s++ {
		t.reads[s] = true
	}
	t.mu.Unlock()
	return t.r.ReadAt(b, off)
}

// patcher applies the fuzzer's bytes as patches to the sectors a walk of
// the seed reads (its metadata, mostly): each 4-byte record is a 3-byte
// position among those sectors' bytes and the byte to store there. Small
// inputs then reach any of that metadata.
type patcher struct {
	base    []byte
	sectors []int64
}

func (o *patcher) image(data []byte) []byte {
	img := slices.Clone(o.base)
	span := len(o.sectors) * 512
	for ; len(data) >= 4; data = data[4:] {
		p := (int(data[0]) | int(data[1])<<8 | int(data[2])<<16) % span
		img[o.sectors[p/512]*512+int64(p%512)] = data[3]
	}
	return img
}

// patch encodes one patch record for the seed corpus.
func (o *patcher) patch(off int64, v byte) []byte {
	i, _ := slices.BinarySearch(o.sectors, off/512)
	p := i*512 + int(off%512)
	return []byte{byte(p), byte(p >> 8), byte(p >> 16), v}
}

// FuzzOpen patches the metadata of the seed volume and opens and walks
// the result: it must never panic, hang or allocate without bound.
func FuzzOpen(f *testing.F) {
	img, err := seedOnce()
	if err != nil {
		f.Fatal(err)
	}
	tr := &tracer{r: bytes.NewReader(img), reads: map[int64]bool{}}
	fsys, err := Open(tr, int64(len(img)))
	if err != nil {
		f.Fatal(err)
	}
	walkAll(fsys)
	o := &patcher{base: img}
	for s := range tr.reads {
		o.sectors = append(o.sectors, s)
	}
	slices.Sort(o.sectors)
	f.Add([]byte{})
	// A few starting points: the boot sector's geometry, $MFT's runlist,
	// the root index.
	f.Add(o.patch(0x0d, 0x80))
	f.Add(o.patch(0x40, 0xf0))
	mftOff := recordOffsetF(fsys, 0)
	f.Add(append(o.patch(mftOff+0x1a0, 0x33), o.patch(mftOff+0x1a1, 0xff)...))
	rootOff := recordOffsetF(fsys, rootRecordNumber)
	f.Add(append(o.patch(rootOff+0x100, 0), o.patch(rootOff+0x180, 0xff)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		m := o.image(data)
		if os.Getenv("NTFS_FUZZ_WATCHDOG") != "" {
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					os.WriteFile("/tmp/ntfs-hang.bin", data, 0o644)
					panic("hang")
				}
			}()
		}
		fsys, err := Open(bytes.NewReader(m), int64(len(m)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "ntfs: ") {
				t.Errorf("error without the package prefix: %v", err)
			}
			return
		}
		walkAll(fsys)
	})
}

func recordOffsetF(f *FS, num uint64) int64 {
	off := int64(num) * f.recordSize
	vcn := off / f.clusterSize
	for _, r := range f.mft.a.runs {
		if vcn >= r.vcn && vcn < r.vcn+r.n && r.lcn >= 0 {
			return (r.lcn+vcn-r.vcn)*f.clusterSize + off%f.clusterSize
		}
	}
	return 0
}

// FuzzRuns decodes runlists and reads through them.
func FuzzRuns(f *testing.F) {
	f.Add([]byte{0x21, 0x10, 0x34, 0x12, 0x01, 0x05, 0x11, 0x02, 0xfe, 0x00}, int64(0), int64(23))
	f.Fuzz(func(t *testing.T, b []byte, start, last int64) {
		runs, err := decodeRuns(b, start, last, 1<<20)
		if err != nil {
			return
		}
		vcn := start
		for _, r := range runs {
			if r.vcn != vcn || r.n <= 0 || r.lcn >= 1<<20 || (r.lcn >= 0 && r.lcn+r.n > 1<<20) {
				t.Fatalf("bad run %+v after vcn %d", r, vcn)
			}
			vcn += r.n
		}
	})
}

// FuzzLZNT1 decompresses arbitrary data into one compression unit.
func FuzzLZNT1(f *testing.F) {
	f.Add([]byte{0x0b, 0xb0, 0x00, 'a', 'b', 'c', 0x08, 'd', 0x00, 0x30})
	f.Fuzz(func(t *testing.T, src []byte) {
		dst := make([]byte, 64<<10)
		lznt1(dst, src)
	})
}
