package vmdk

import (
	"os"

	"github.com/vdisk-project/vdisk/disk/disktest"
	"path/filepath"
	"testing"
)

// FuzzDescriptor parses arbitrary descriptor text; it must never panic,
// and a parsed descriptor must round-trip byte for byte when unchanged.
func FuzzDescriptor(f *testing.F) {
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 8388608 SPARSE \"a.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"ide\"\n"))
	f.Add([]byte("version=1\r\ncreateType = \"vmfs\"\r\nRW 10 VMFS \"x-flat.vmdk\"\r\nRDONLY 5 ZERO\r\nNOACCESS 1 FLAT \"y\" 7 a b\r\n"))
	f.Add([]byte("# Disk DescriptorFile\nversion=3\nparentCID=1\nCID=2\ncreateType=\"seSparse\"\nparentFileNameHint=\"C:\\\\a\\\\b.vmdk\"\nRW 8 SESPARSE \"s.vmdk\"\n\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDescriptor(b)
		if err != nil {
			return
		}
		again, err := parseDescriptor(d.bytes())
		if err != nil {
			t.Fatalf("re-parse of rendered descriptor failed: %v", err)
		}
		if len(again.extents) != len(d.extents) || again.get("createType") != d.get("createType") {
			t.Fatalf("round trip changed the descriptor")
		}
		d.set("CID", "12345678")
		d.set("ddb.x", "y")
		if _, err := parseDescriptor(d.bytes()); err != nil {
			t.Fatalf("edited descriptor does not parse: %v", err)
		}
	})
}

// FuzzSparse opens arbitrary bytes as a VMDK image (header, grain
// directory, grain tables, embedded descriptor), reads it and checks it:
// typed errors only, never a panic, a hang or an allocation sized by the
// input.
func FuzzSparse(f *testing.F) {
	f.Add(goodSparse(f))
	if b, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "testdata", "vmware", "ttylinux-disk1-truncated.vmdk")); err == nil && len(b) > 4096 {
		f.Add(b[:4096])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := openBytes(b, nil); err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

// FuzzDelta opens arbitrary bytes as a vmfsSparse (COWD) and as an SEsparse
// extent behind a descriptor, reads them and checks them.
func FuzzDelta(f *testing.F) {
	f.Add(seImage(4<<20, map[int64][]byte{1: make([]byte, seGrainBytes), 2: nil}))
	cowd := disktest.NewCrashFS()
	cf, _ := cowd.OpenFile("/c", os.O_CREATE|os.O_RDWR, 0o644)
	createCOWD(cf, 4<<20, 1)
	cf.Close()
	f.Add(cowd.Bytes("/c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, typ := range []string{"VMFSSPARSE", "SESPARSE"} {
			desc := newDescriptorText(1, 0xffffffff, "custom", "", []extentLine{{Access: "RW", Sectors: 8192, Type: typ, File: "e.vmdk"}}, nil)
			openBytes(desc, map[string][]byte{"e.vmdk": b})
		}
	})
}

// FuzzSESparseWrite opens arbitrary bytes as a writable SEsparse extent
// (seeded with one vdisk wrote), writes, zeroes, trims and flushes it, and
// checks and reads it again: nothing may panic or hang.
func FuzzSESparseWrite(f *testing.F) {
	fsys := disktest.NewCrashFS()
	d, err := Create(ctx, "/s/d.vmdk", 1<<20, &CreateOptions{Subformat: SESparse, FS: fsys})
	if err != nil {
		f.Fatal(err)
	}
	d.WriteAt(make([]byte, 12345), 4000)
	d.Trim(0, 8192)
	d.Close()
	f.Add(fsys.Bytes("/s/d-sesparse.vmdk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		fsys := disktest.NewCrashFS()
		desc := newDescriptorText(1, 0xffffffff, "seSparse", "", []extentLine{{Access: "RW", Sectors: 2048, Type: "SESPARSE", File: "e.vmdk"}}, nil)
		for name, c := range map[string][]byte{"/x/a.vmdk": desc, "/x/e.vmdk": b} {
			w, _ := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
			w.WriteAt(c, 0)
			w.Close()
		}
		if d, err := Open(ctx, "/x/a.vmdk", &OpenOptions{FS: fsys}); err == nil {
			d.WriteAt(make([]byte, 9000), 1000)
			d.WriteZeroes(20000, 10000, 0)
			d.Trim(0, 1<<20)
			d.Flush()
			d.WriteAt(make([]byte, 5000), 300000)
			d.Close()
		}
		Check(ctx, "/x/a.vmdk", &CheckOptions{FS: fsys, Repair: RepairAll})
		openBytes(desc, map[string][]byte{"e.vmdk": fsys.Bytes("/x/e.vmdk")})
	})
}
