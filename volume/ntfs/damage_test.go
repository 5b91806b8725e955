package ntfs

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/inode"
)

// recordOffset returns where MFT record num lies in the volume.
func recordOffset(t *testing.T, f *FS, num uint64) int64 {
	t.Helper()
	off := int64(num) * f.recordSize
	vcn := off / f.clusterSize
	for _, r := range f.mft.a.runs {
		if vcn >= r.vcn && vcn < r.vcn+r.n && r.lcn >= 0 {
			return (r.lcn+vcn-r.vcn)*f.clusterSize + off%f.clusterSize
		}
	}
	t.Fatalf("mft record %d not mapped", num)
	return 0
}

// attrOffset returns the offset in raw record rec of its first attribute
// of type typ.
func attrOffset(t *testing.T, rec []byte, typ uint32) int {
	t.Helper()
	for off := int(binary.LittleEndian.Uint16(rec[0x14:])); off+8 <= len(rec); {
		if binary.LittleEndian.Uint32(rec[off:]) == typ {
			return off
		}
		n := int(binary.LittleEndian.Uint32(rec[off+4:]))
		if n == 0 {
			break
		}
		off += n
	}
	t.Fatalf("no attribute 0x%x in the record", typ)
	return 0
}

// TestDamaged breaks single structures of a copy of the test image and
// checks that the file concerned gives a typed error while the rest stays
// readable.
func TestDamaged(t *testing.T) {
	src := testImage(t)
	clean := openImage(t, src)
	ino := func(name string) uint64 {
		fi, err := clean.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*inode.Stat).Ino
	}
	img, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	poke := func(off int64, b ...byte) {
		t.Helper()
		for i := range b {
			if (off+int64(i))%512 >= 510 {
				t.Fatalf("poke at %d hits a fixup position", off+int64(i))
			}
		}
		copy(img[off:], b)
	}
	rec := func(name string) (int64, []byte) {
		off := recordOffset(t, clean, ino(name))
		return off, img[off : off+clean.recordSize]
	}

	// A record with a bad magic.
	off, _ := rec("medium.bin")
	poke(off, 'B', 'A', 'A', 'D')
	// A record whose fixup does not match.
	off, _ = rec("small.txt")
	img[off+510] ^= 0xff
	// A runlist past the end of the volume.
	off, r := rec("big.bin")
	a := attrOffset(t, r, attrData)
	ro := a + int(binary.LittleEndian.Uint16(r[a+0x20:]))
	h := r[ro]
	ls, os_ := int(h&0xf), int(h>>4)
	lcn := make([]byte, os_)
	for i := range lcn {
		lcn[i] = 0xff
	}
	lcn[os_-1] = 0x7f
	poke(off+int64(ro+1+ls), lcn...)
	// An encrypted file (the EFS flag in $STANDARD_INFORMATION).
	off, r = rec("hidden")
	a = attrOffset(t, r, attrStandardInformation)
	vo := a + int(binary.LittleEndian.Uint16(r[a+0x14:]))
	fa := binary.LittleEndian.Uint32(r[vo+0x20:]) | fileEncrypted
	poke(off+int64(vo+0x20), binary.LittleEndian.AppendUint32(nil, fa)...)
	// An index block of the big directory.
	many, err := clean.node(ino("many"), 0)
	if err != nil {
		t.Fatal(err)
	}
	lcn0 := many.indexAlloc.runs[0].lcn
	poke(lcn0*clean.clusterSize, 'X')

	path := filepath.Join(t.TempDir(), "damaged.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	f := openImage(t, path)

	for _, c := range []struct {
		name string
		op   string
		want disk.Code
	}{
		{"medium.bin", "stat", disk.ErrCorrupt},
		{"small.txt", "stat", disk.ErrCorrupt},
		{"big.bin", "open", disk.ErrCorrupt},
		{"hidden", "open", disk.ErrNotSupported},
		{"many", "readdir", disk.ErrCorrupt},
		{"many/file-00001-n", "stat", disk.ErrCorrupt},
	} {
		var err error
		switch c.op {
		case "stat":
			_, err = f.Stat(c.name)
		case "open":
			_, err = f.Open(c.name)
		case "readdir":
			_, err = f.ReadDir(c.name)
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s(%q) = %v, want %v", c.op, c.name, err, c.want)
		}
	}
	if _, err := f.Stat("big.bin"); err != nil {
		t.Errorf("Stat(big.bin) = %v; only its data is damaged", err)
	}
	for _, name := range []string{"sparse", "comp/text", "dir/sub/deep.txt", "links/abs"} {
		want, err := fs.ReadFile(clean, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fs.ReadFile(f, name)
		if err != nil || string(got) != string(want) {
			t.Errorf("ReadFile(%q) on the damaged image: %d bytes, %v", name, len(got), err)
		}
	}
	// The walk reports errors for the damaged names and finishes.
	n := 0
	fs.WalkDir(f, ".", func(p string, d fs.DirEntry, err error) error {
		n++
		return nil
	})
	if n < 30 {
		t.Errorf("walk of the damaged image saw %d names", n)
	}
}

// TestTruncated opens a volume cut short: what lies inside reads, what
// lies past the end gives a corrupt error.
func TestTruncated(t *testing.T) {
	src := testImage(t)
	clean := openImage(t, src)
	fi, err := clean.Stat("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	n, err := clean.node(fi.Sys().(*inode.Stat).Ino, 0)
	if err != nil {
		t.Fatal(err)
	}
	end := (n.data.runs[0].lcn + 1) * clean.clusterSize // big.bin's first cluster stays
	img, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the metadata ($MFT sits near the start on mkntfs volumes).
	mftEnd := recordOffset(t, clean, 200)
	if end < mftEnd {
		t.Skipf("big.bin at %d lies before the end of $MFT records (%d)", end, mftEnd)
	}
	path := filepath.Join(t.TempDir(), "short.img")
	if err := os.WriteFile(path, img[:end], 0o644); err != nil {
		t.Fatal(err)
	}
	f := openImage(t, path)
	if _, err := fs.ReadFile(f, "big.bin"); !errors.Is(err, disk.ErrCorrupt) {
		t.Errorf("ReadFile(big.bin) past the end = %v, want corrupt", err)
	}
	if b, err := fs.ReadFile(f, "small.txt"); err != nil || string(b) != "hello, ntfs\n" {
		t.Errorf("ReadFile(small.txt) = %q, %v", b, err)
	}
}

// TestUnsupportedReparse refuses the data of files whose bytes live
// behind a reparse point (WOF compression, deduplication, cloud files)
// and reads files with other reparse tags as they are.
func TestUnsupportedReparse(t *testing.T) {
	img := mkntfs(t, t.TempDir(), 16<<20, "Rp")
	mnt, umount := mountNTFS(t, img, "streams_interface=xattr")
	rp := func(tag uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, tag)
		b = binary.LittleEndian.AppendUint16(b, 8)
		b = binary.LittleEndian.AppendUint16(b, 0)
		return append(b, 1, 2, 3, 4, 5, 6, 7, 8)
	}
	for name, tag := range map[string]uint32{"wof": tagWOF, "dedup": tagDedup, "cloud": 0x9000601a, "other": 0x8000001b} {
		p := filepath.Join(mnt, name)
		if err := os.WriteFile(p, []byte("data"), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "system.ntfs_reparse_data", rp(tag), 0); err != nil {
			t.Fatalf("set reparse data on %s: %v", name, err)
		}
	}
	umount()
	f := openImage(t, img)
	for _, name := range []string{"wof", "dedup", "cloud"} {
		if _, err := f.Stat(name); err != nil {
			t.Errorf("Stat(%q) = %v", name, err)
		}
		if _, err := f.Open(name); !errors.Is(err, disk.ErrNotSupported) {
			t.Errorf("Open(%q) = %v, want not supported", name, err)
		}
	}
	if b, err := fs.ReadFile(f, "other"); err != nil || string(b) != "data" {
		t.Errorf("ReadFile(other) = %q, %v", b, err)
	}
}
