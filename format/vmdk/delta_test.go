package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

// makeBase creates a monolithicFlat base with a pattern and returns its
// content.
func makeBase(t *testing.T, path string, size int64) []byte {
	t.Helper()
	d, err := Create(ctx, path, size, &CreateOptions{Subformat: MonolithicFlat})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(i/512 + 1)
	}
	if _, err := d.WriteAt(model, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return model
}

func TestCOWDDelta(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	model := makeBase(t, base, 9<<20)
	path := filepath.Join(dir, "snap-000001.vmdk")
	d, err := Create(ctx, path, 0, &CreateOptions{Subformat: VMFSSparse, Parent: base})
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, d, model, 5, 40)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(model))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("COWD delta reads back different content")
	}
	if in := d.Info(); in.CreateType != VMFSSparse || in.Links != 2 {
		t.Errorf("info = %+v", in)
	}
	disktest.CheckExtents(t, d)
	d.Close()
	if _, err := exec.LookPath("qemu-img"); err == nil || testenv.Required("qemu-img") {
		if got := readAll(t, path, "vmdk"); !bytes.Equal(got, model) {
			t.Fatal("qemu reads our COWD delta differently")
		}
	}
}

func TestCOWDConformance(t *testing.T) {
	disktest.RunTests(t, disktest.Harness{
		New: func(t *testing.T, size int64) disk.Disk {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.vmdk")
			b, err := Create(ctx, base, size, &CreateOptions{Subformat: MonolithicFlat})
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
			d, err := Create(ctx, filepath.Join(dir, "d.vmdk"), 0, &CreateOptions{Subformat: VMFSSparse, Parent: base})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Reopen: reopen,
	})
}

// seImage builds an SEsparse delta of capacity bytes holding the given
// grains (4 KiB each; nil data means a zero grain entry), laid out as
// reference §5.3 describes.
func seImage(capacity int64, grains map[int64][]byte) []byte {
	le := binary.LittleEndian
	sectors := uint64(capacity / 512)
	nGD := divRoundUp(sectors, seGrainSectors*seGTEntries)
	gdSize := divRoundUp(nGD*8, 512)
	gtOff := 2 + gdSize
	gtSize := nGD * seGTSectors
	grainsOff := gtOff + gtSize
	var nData uint64
	for _, g := range grains {
		if g != nil {
			nData++
		}
	}
	img := make([]byte, (grainsOff+nData*seGrainSectors)*512)
	h := img[:512]
	le.PutUint64(h[0:], seConstMagic)
	le.PutUint64(h[8:], seVersion)
	le.PutUint64(h[16:], sectors)
	le.PutUint64(h[24:], seGrainSectors)
	le.PutUint64(h[32:], seGTSectors)
	le.PutUint64(h[80:], 1)
	le.PutUint64(h[88:], 1)
	le.PutUint64(h[128:], 2)
	le.PutUint64(h[136:], gdSize)
	le.PutUint64(h[144:], gtOff)
	le.PutUint64(h[152:], gtSize)
	le.PutUint64(h[192:], grainsOff)
	le.PutUint64(h[200:], nData*seGrainSectors)
	le.PutUint64(img[512:], seVolatileMagic)
	for i := range nGD {
		le.PutUint64(img[(2*512)+i*8:], 0x10000000<<32|i)
	}
	next := uint64(0)
	for g := int64(0); g < capacity/seGrainBytes; g++ {
		data, ok := grains[g]
		if !ok {
			continue
		}
		var v uint64 = 2 << 60
		if data != nil {
			v = 3<<60 | (next&0xfff)<<48 | next>>12
			copy(img[(grainsOff+next*seGrainSectors)*512:], data)
			next++
		}
		le.PutUint64(img[gtOff*512+uint64(g)*8:], v)
	}
	return img
}

func TestSESparse(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	const size = 20 << 20
	model := makeBase(t, base, size)
	rng := rand.New(rand.NewPCG(3, 3))
	grains := map[int64][]byte{}
	for range 200 {
		g := rng.Int64N(size / seGrainBytes)
		if rng.IntN(5) == 0 {
			grains[g] = nil
			clear(model[g*seGrainBytes : (g+1)*seGrainBytes])
			continue
		}
		b := make([]byte, seGrainBytes)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		grains[g] = b
		copy(model[g*seGrainBytes:], b)
	}
	os.WriteFile(filepath.Join(dir, "snap-sesparse.vmdk"), seImage(size, grains), 0o644)
	pd, _ := Open(ctx, base, &OpenOptions{ReadOnly: true})
	pcid := pd.Info().CID
	pd.Close()
	desc := newDescriptorText(newCID(), pcid, "seSparse", "base.vmdk",
		[]extentLine{{Access: "RW", Sectors: size / 512, Type: "SESPARSE", File: "snap-sesparse.vmdk"}}, nil)
	path := filepath.Join(dir, "snap.vmdk")
	os.WriteFile(path, desc, 0o644)
	if _, err := Open(ctx, path, nil); !errors.Is(err, disk.ErrNotSupported) {
		t.Errorf("opening seSparse for writing = %v, want ErrNotSupported", err)
	}
	d, err := Open(ctx, path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("SEsparse delta reads differently from the model")
	}
	disktest.CheckExtents(t, d)
	if _, err := exec.LookPath("qemu-img"); err == nil || testenv.Required("qemu-img") {
		if q := readAll(t, path, "vmdk"); !bytes.Equal(q, model) {
			t.Fatal("qemu reads the SEsparse delta differently")
		}
	}
}

func TestSESparseMalformed(t *testing.T) {
	good := seImage(8<<20, map[int64][]byte{3: bytes.Repeat([]byte{1}, seGrainBytes)})
	le := binary.LittleEndian
	mut := func(f func(b []byte)) []byte { b := append([]byte(nil), good...); f(b); return b }
	tests := []struct {
		name string
		img  []byte
		want disk.Code
	}{
		{"valid", good, 0},
		{"bad-magic", mut(func(b []byte) { b[0] = 0 }), disk.ErrCorrupt},
		{"bad-version", mut(func(b []byte) { le.PutUint64(b[8:], 3) }), disk.ErrNotSupported},
		{"padding", mut(func(b []byte) { b[300] = 1 }), disk.ErrCorrupt},
		{"dirty-journal", mut(func(b []byte) { le.PutUint64(b[512+24:], 1) }), disk.ErrNotSupported},
		{"gd-outside", mut(func(b []byte) { le.PutUint64(b[128:], 1<<40) }), disk.ErrCorrupt},
		{"bad-nibble", mut(func(b []byte) { le.PutUint64(b[3*512+3*8:], 7<<60) }), disk.ErrCorrupt},
		{"grain-outside", mut(func(b []byte) { le.PutUint64(b[3*512+3*8:], 3<<60|0xffff) }), disk.ErrCorrupt},
		{"huge-capacity", mut(func(b []byte) { le.PutUint64(b[16:], 1<<50) }), disk.ErrCorrupt},
		{"huge-grain-section", mut(func(b []byte) { le.PutUint64(b[200:], 1<<49) }), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			desc := newDescriptorText(1, 0xffffffff, "seSparse", "", []extentLine{{Access: "RW", Sectors: 8 << 11, Type: "SESPARSE", File: "s.vmdk"}}, nil)
			err := openBytes(desc, map[string][]byte{"s.vmdk": tt.img})
			if got := disk.CodeOf(err); got != tt.want {
				t.Errorf("error = %v, want code %v", err, tt.want)
			}
		})
	}
}
