package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// goodSparse returns the bytes of a small valid monolithicSparse image with
// one allocated grain.
func goodSparse(t testing.TB) []byte {
	t.Helper()
	fsys := disktest.NewCrashFS()
	d, err := Create(ctx, "/g.vmdk", 4<<20, &CreateOptions{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{0xab}, 65536), 65536); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return fsys.Bytes("/g.vmdk")
}

// openBytes opens b as an image on an in-memory filesystem and reads every
// byte and every extent. It returns the first error.
func openBytes(b []byte, extra map[string][]byte) error {
	fsys := disktest.NewCrashFS()
	put := func(name string, b []byte) {
		f, _ := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
		f.WriteAt(b, 0)
		f.Close()
	}
	put("/x/a.vmdk", b)
	for n, c := range extra {
		put(filepath.Join("/x", n), c)
	}
	d, err := Open(ctx, "/x/a.vmdk", &OpenOptions{ReadOnly: true, FS: fsys})
	if err != nil {
		return err
	}
	defer d.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < min(d.Size(), 64<<20); off += int64(len(buf)) {
		if _, err := d.ReadAt(buf, off); err != nil && !errors.Is(err, errEOF) {
			return err
		}
	}
	if err := d.Extents(ctx, 0, d.Size(), func(disk.Extent) error { return nil }); err != nil {
		return err
	}
	_, err = Check(ctx, "/x/a.vmdk", &CheckOptions{FS: fsys})
	return err
}

var errEOF = errorsEOF()

func errorsEOF() error { _, err := bytes.NewReader(nil).ReadAt(make([]byte, 1), 0); return err }

func TestMalformed(t *testing.T) {
	good := goodSparse(t)
	le := binary.LittleEndian
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	h, _ := parseSparseHeader(good)
	gdEntry := int64(h.GDOffset) * 512
	gt := int64(le.Uint32(good[gdEntry:])) * 512
	tests := []struct {
		name  string
		image []byte
		extra map[string][]byte
		want  disk.Code // 0: must open and read without error
	}{
		{"valid", good, nil, 0},
		{"tiny", []byte("KD"), nil, disk.ErrCorrupt},
		{"bad-version", mut(func(b []byte) []byte { le.PutUint32(b[4:], 4); return b }), nil, disk.ErrNotSupported},
		{"grain-zero", mut(func(b []byte) []byte { le.PutUint64(b[20:], 0); return b }), nil, disk.ErrCorrupt},
		{"grain-not-pow2", mut(func(b []byte) []byte { le.PutUint64(b[20:], 100); return b }), nil, disk.ErrCorrupt},
		{"grain-huge", mut(func(b []byte) []byte { le.PutUint64(b[20:], ^uint64(0)); return b }), nil, disk.ErrCorrupt},
		{"gtes-huge", mut(func(b []byte) []byte { le.PutUint32(b[44:], 0xffffffff); return b }), nil, disk.ErrCorrupt},
		{"capacity-huge", mut(func(b []byte) []byte { le.PutUint64(b[12:], 1<<31); le.PutUint32(b[44:], 1); return b }), nil, disk.ErrCorrupt},
		// Capacity is not limited to 2 TiB (file offsets are), but the
		// grain directory of 2 TiB does not fit this 128 KiB file.
		{"capacity-2TiB-gd-too-big", mut(func(b []byte) []byte { le.PutUint64(b[12:], 1<<32); return b }), nil, disk.ErrCorrupt},
		{"capacity-overflows-int64", mut(func(b []byte) []byte { le.PutUint64(b[12:], 1<<62); le.PutUint64(b[20:], 1<<21); return b }), nil, disk.ErrCorrupt},
		{"gd-at-end-no-footer", mut(func(b []byte) []byte { le.PutUint64(b[56:], ^uint64(0)); return b }), nil, disk.ErrCorrupt},
		{"gd-past-eof", mut(func(b []byte) []byte { le.PutUint64(b[56:], 1<<30); return b }), nil, disk.ErrCorrupt},
		{"truncated", good[:4096], nil, disk.ErrCorrupt},
		{"newline-mangled", mut(func(b []byte) []byte { b[75] = '\n'; return b }), nil, disk.ErrCorrupt},
		{"unknown-incompat-flag", mut(func(b []byte) []byte { le.PutUint32(b[8:], le.Uint32(b[8:])|1<<20); return b }), nil, disk.ErrNotSupported},
		{"markers-without-compression", mut(func(b []byte) []byte { le.PutUint32(b[8:], le.Uint32(b[8:])|flagMarkers); return b }), nil, disk.ErrCorrupt},
		{"gte-past-eof", mut(func(b []byte) []byte { le.PutUint32(b[gt+4:], 0x7fffff80); return b }), nil, disk.ErrCorrupt},
		{"gte-into-metadata", mut(func(b []byte) []byte { le.PutUint32(b[gt+4:], 2); return b }), nil, disk.ErrCorrupt},
		{"gde-past-eof", mut(func(b []byte) []byte { le.PutUint32(b[gdEntry:], 0x7ffffff0); return b }), nil, disk.ErrCorrupt},
		{"no-createtype", []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\nRW 2048 FLAT \"f.raw\" 0\n"), nil, disk.ErrCorrupt},
		{"createtype-spaces", []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType = \"monolithicFlat\"\nRW 2048 FLAT \"f.raw\" 0\n"),
			map[string][]byte{"f.raw": make([]byte, 2048*512)}, 0},
		{"cid-after-parentcid-crlf", []byte("# Disk DescriptorFile\r\n\r\nversion=1\r\nparentCID=ffffffff\r\nCID=1a\r\ncreateType=\"monolithicFlat\"\r\nRW 2048 FLAT \"f.raw\" 0\r\n\x00\x00"),
			map[string][]byte{"f.raw": make([]byte, 2048*512)}, 0},
		{"zero-rdonly-noaccess", []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"custom\"\nRW 2048 ZERO\nRDONLY 2048 FLAT \"f.raw\" 0\nNOACCESS 8 FLAT \"f.raw\" 0\n"),
			map[string][]byte{"f.raw": make([]byte, 2048*512)}, disk.ErrAccess},
		{"missing-extent", []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"nope.raw\" 0\n"), nil, disk.ErrNotFound},
		{"bad-extent-line", []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW -5 FLAT \"f.raw\" 0\n"), nil, disk.ErrCorrupt},
		{"unknown-extent-type", []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"x\"\nRW 5 WEIRD \"f.raw\" 0\n"), nil, disk.ErrNotSupported},
		{"vsan", []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vsanSparse\"\nRW 2048 VMFSSPARSE \"vsan://abc\"\n"), nil, disk.ErrNotSupported},
		{"descriptor-over-10KiB", append([]byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"f.raw\" 0\n"), bytes.Repeat([]byte("# padding comment line\n"), 1000)...),
			map[string][]byte{"f.raw": make([]byte, 2048*512)}, 0},
		{"descriptor-over-1MiB", bytes.Repeat([]byte("#"), 2<<20), nil, disk.ErrCorrupt},
		{"parent-missing", []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\ncreateType=\"monolithicFlat\"\nparentFileNameHint=\"C:\\\\vms\\\\base.vmdk\"\nRW 2048 FLAT \"f.raw\" 0\n"),
			map[string][]byte{"f.raw": make([]byte, 2048*512)}, disk.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- openBytes(tt.image, tt.extra) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("hangs")
			}
			if got := disk.CodeOf(err); got != tt.want {
				t.Errorf("error = %v (code %v), want code %v", err, got, tt.want)
			}
		})
	}
}

func TestDescriptorRoundTrip(t *testing.T) {
	texts := []string{
		"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\nisNativeSnapshot=\"no\"\ncreateType=\"vmfs\"\n\n# Extent description\nRW 8388608 VMFS \"x-flat.vmdk\"\n\n# Change Tracking File\nchangeTrackPath=\"x-ctk.vmdk\"\n\n# The Disk Data Base \n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.thinProvisioned = \"1\"\nddb.unknownKey = \"kept\"\n",
		"# Disk DescriptorFile\r\nversion=1\r\nCID=1a2b3c4d\r\nparentCID=ffffffff\r\ncreateType=\"partitionedDevice\"\r\nRW 63 FLAT \"\\\\.\\PhysicalDrive0\" 0 partitionUUID deviceID\r\nRW 1000 ZERO \r\n",
	}
	for _, text := range texts {
		d, err := parseDescriptor([]byte(text))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if got := string(d.bytes()); got != text {
			t.Errorf("round trip changed the text:\n%q\nwant\n%q", got, text)
		}
	}
	d, _ := parseDescriptor([]byte(texts[0]))
	d.set("CID", "0badcafe")
	d.set("ddb.new", "v")
	out := string(d.bytes())
	if !strings.Contains(out, "CID=0badcafe\n") || !strings.HasSuffix(out, "ddb.new = \"v\"\n") || !strings.Contains(out, "ddb.unknownKey = \"kept\"") {
		t.Errorf("edited descriptor:\n%s", out)
	}
}

// memFS returns an in-memory filesystem holding files.
func memFS(t testing.TB, files map[string][]byte) *disktest.CrashFS {
	t.Helper()
	fsys := disktest.NewCrashFS()
	for name, b := range files {
		f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(b, 0)
		f.Close()
	}
	return fsys
}
