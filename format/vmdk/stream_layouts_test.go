package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"testing"
)

// streamLayout builds streamOptimized files in the layouts other producers
// write, to prove the reader takes them all.
type streamLayout struct {
	markers   bool // grain markers (flag 17)
	lenPrefix bool // without markers: a 4-byte length before the data (open-vmdk), else none (qemu)
	progress  bool // a type-4 progress marker between grains
}

func buildStream(t *testing.T, lay streamLayout, model []byte) []byte {
	t.Helper()
	le := binary.LittleEndian
	capacity := uint64(len(model)) / 512
	h := &sparseHeader{Version: 3, Flags: flagNewlineDetector | flagCompressed, Capacity: capacity, GrainSize: 128,
		DescriptorOffset: 1, DescriptorSize: 1, NumGTEsPerGT: 512, CompressAlgorithm: compressDeflate}
	if lay.markers {
		h.Flags |= flagMarkers
	}
	h.setNewlineChars()
	gdN := h.numGDEntries()
	gdSectors := divRoundUp(gdN*4, 512)
	h.GDOffset = 2
	h.OverHead = 2 + gdSectors + gdN*4 // open-vmdk: not grain-aligned
	img := make([]byte, h.OverHead*512)
	copy(img, h.marshal())
	copy(img[512:], newDescriptorText(0x1234, 0xffffffff, "streamOptimized", "",
		[]extentLine{{Access: "RW", Sectors: int64(capacity), Type: "SPARSE", File: "x.vmdk"}}, nil))
	for i := range gdN {
		le.PutUint32(img[2*512+i*4:], uint32(2+gdSectors+i*4))
	}
	pad := func() {
		if r := len(img) % 512; r != 0 {
			img = append(img, make([]byte, 512-r)...)
		}
	}
	for g := 0; g*65536 < len(model); g++ {
		data := model[g*65536 : min((g+1)*65536, len(model))]
		if isZeroBytes(data) {
			continue
		}
		var z bytes.Buffer
		w := zlib.NewWriter(&z)
		w.Write(data)
		w.Close()
		sec := uint32(len(img) / 512)
		switch {
		case lay.markers:
			var m [12]byte
			le.PutUint64(m[:], uint64(g)*128)
			le.PutUint32(m[8:], uint32(z.Len()))
			img = append(img, m[:]...)
		case lay.lenPrefix:
			var m [4]byte
			le.PutUint32(m[:], uint32(z.Len()))
			img = append(img, m[:]...)
		}
		img = append(img, z.Bytes()...)
		pad()
		gt := 2 + gdSectors + uint64(g/512)*4
		le.PutUint32(img[gt*512+uint64(g%512)*4:], sec)
		if lay.progress && lay.markers {
			var m [512]byte
			le.PutUint64(m[:], 1) // one sector follows
			le.PutUint32(m[12:], markerProgress)
			img = append(img, m[:]...)
			img = append(img, bytes.Repeat([]byte{0xee}, 512)...)
		}
	}
	if lay.markers {
		img = append(img, make([]byte, 512)...) // EOS
	}
	return img
}

func isZeroBytes(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func TestStreamProducerLayouts(t *testing.T) {
	model := scattered(3<<20+512*5, 17) // a partial last grain
	for _, lay := range []streamLayout{
		{markers: true},
		{markers: true, progress: true},
		{lenPrefix: true},
		{},
	} {
		name := "markers"
		switch {
		case lay.progress:
			name = "markers+progress"
		case lay.lenPrefix:
			name = "no-markers+length"
		case !lay.markers:
			name = "no-markers"
		}
		t.Run(name, func(t *testing.T) {
			img := buildStream(t, lay, model)
			if err := openBytes(img, nil); err != nil {
				t.Fatalf("open: %v", err)
			}
			fsys := memFS(t, map[string][]byte{"/s.vmdk": img})
			d, err := Open(ctx, "/s.vmdk", &OpenOptions{ReadOnly: true, FS: fsys})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := make([]byte, d.Size())
			if _, err := d.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatal("reads differently from the model")
			}
			if lay.markers {
				if r, err := Check(ctx, "/s.vmdk", &CheckOptions{FS: fsys}); err != nil || r.Errors != 0 {
					t.Errorf("check = %+v, %v", r, err)
				}
			}
		})
	}
}
