package winreg

import (
	"encoding/binary"
	"strings"
	"unicode/utf16"
)

// A tiny regf writer, written from the format description independently
// of the reader: one hive bin holding every cell.

type wkey struct {
	name  string
	list  string // "lh" (default), "lf", "li" or "ri" (two li lists)
	subs  []*wkey
	vals  []wval
	utf16 bool // store the name as UTF-16 rather than compressed
}

type wval struct {
	name string
	typ  uint32
	data []byte
}

type hiveWriter struct {
	cells []byte // from the start of the first hbin's cells
}

const hbinHeader = 32

func pad8(n int) int { return (n + 7) &^ 7 }

// alloc appends an allocated cell holding data and returns its offset
// relative to the first hive bin.
func (w *hiveWriter) alloc(data []byte) uint32 {
	off := uint32(hbinHeader + len(w.cells))
	size := pad8(len(data) + 4)
	c := make([]byte, size)
	binary.LittleEndian.PutUint32(c, uint32(-int32(size)))
	copy(c[4:], data)
	w.cells = append(w.cells, c...)
	return off
}

func (w *hiveWriter) patch32(cell uint32, at int, v uint32) {
	binary.LittleEndian.PutUint32(w.cells[int(cell)-hbinHeader+4+at:], v)
}

func u16s(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

func lhHash(name string) uint32 {
	var h uint32
	for _, r := range strings.ToUpper(name) {
		h = h*37 + uint32(r)
	}
	return h
}

func (w *hiveWriter) key(k *wkey, parent uint32) uint32 {
	nk := make([]byte, 76)
	copy(nk, "nk")
	name := []byte(k.name)
	flags := uint16(0x20) // KEY_COMP_NAME
	if k.utf16 {
		name, flags = u16s(k.name), 0
	}
	if parent == 0 {
		flags |= 0x4 | 0x8 // root key (KEY_HIVE_ENTRY, KEY_NO_DELETE)
	}
	le := binary.LittleEndian
	le.PutUint16(nk[2:], flags)
	le.PutUint32(nk[16:], parent)
	le.PutUint32(nk[20:], uint32(len(k.subs)))
	le.PutUint32(nk[28:], 0xffffffff)
	le.PutUint32(nk[32:], 0xffffffff)
	le.PutUint32(nk[36:], uint32(len(k.vals)))
	le.PutUint32(nk[40:], 0xffffffff)
	le.PutUint32(nk[44:], 0xffffffff)
	le.PutUint32(nk[48:], 0xffffffff)
	le.PutUint16(nk[72:], uint16(len(name)))
	nk = append(nk, name...)
	off := w.alloc(nk)
	if parent == 0 {
		w.patch32(off, 16, 0xffffffff)
	}
	// A security cell, which hivex requires every key to have.
	sk := make([]byte, 24)
	copy(sk, "sk")
	le.PutUint32(sk[12:], 1)
	skOff := w.alloc(sk)
	w.patch32(skOff, 4, skOff)
	w.patch32(skOff, 8, skOff)
	w.patch32(off, 44, skOff)

	if len(k.subs) > 0 {
		offs := make([]uint32, len(k.subs))
		for i, s := range k.subs {
			offs[i] = w.key(s, off)
		}
		w.patch32(off, 28, w.list(k, offs))
	}
	if len(k.vals) > 0 {
		var vl []byte
		for _, v := range k.vals {
			vl = le.AppendUint32(vl, w.value(v))
		}
		w.patch32(off, 40, w.alloc(vl))
	}
	return off
}

func (w *hiveWriter) list(k *wkey, offs []uint32) uint32 {
	le := binary.LittleEndian
	simple := func(kind string, offs []uint32, subs []*wkey) uint32 {
		b := []byte(kind)
		b = le.AppendUint16(b, uint16(len(offs)))
		for i, o := range offs {
			b = le.AppendUint32(b, o)
			switch kind {
			case "lh":
				b = le.AppendUint32(b, lhHash(subs[i].name))
			case "lf":
				hint := []byte(subs[i].name + "\x00\x00\x00\x00")[:4]
				b = append(b, hint...)
			}
		}
		return w.alloc(b)
	}
	switch k.list {
	case "lf", "li":
		return simple(k.list, offs, k.subs)
	case "ri":
		h := len(offs) / 2
		a, b := simple("li", offs[:h], k.subs[:h]), simple("li", offs[h:], k.subs[h:])
		ri := []byte("ri")
		ri = le.AppendUint16(ri, 2)
		ri = le.AppendUint32(ri, a)
		ri = le.AppendUint32(ri, b)
		return w.alloc(ri)
	}
	return simple("lh", offs, k.subs)
}

func (w *hiveWriter) value(v wval) uint32 {
	le := binary.LittleEndian
	vk := make([]byte, 20)
	copy(vk, "vk")
	le.PutUint16(vk[2:], uint16(len(v.name)))
	le.PutUint32(vk[12:], v.typ)
	le.PutUint16(vk[16:], 1) // VALUE_COMP_NAME
	switch n := len(v.data); {
	case n <= 4:
		le.PutUint32(vk[4:], uint32(n)|0x80000000)
		copy(vk[8:12], v.data)
	case n <= 16344:
		le.PutUint32(vk[4:], uint32(n))
		le.PutUint32(vk[8:], w.alloc(v.data))
	default:
		le.PutUint32(vk[4:], uint32(n))
		var segs []byte
		count := 0
		for d := v.data; len(d) > 0; count++ {
			k := min(len(d), 16344)
			segs = le.AppendUint32(segs, w.alloc(d[:k]))
			d = d[k:]
		}
		db := []byte("db")
		db = le.AppendUint16(db, uint16(count))
		db = le.AppendUint32(db, w.alloc(segs))
		le.PutUint32(vk[8:], w.alloc(db))
	}
	vk = append(vk, v.name...)
	return w.alloc(vk)
}

// buildHive returns a regf file holding the tree under root.
func buildHive(root *wkey) []byte {
	w := &hiveWriter{}
	rootOff := w.key(root, 0)
	le := binary.LittleEndian
	binSize := (hbinHeader + len(w.cells) + 4095) &^ 4095
	// The rest of the bin is one free cell.
	if free := binSize - hbinHeader - len(w.cells); free > 0 {
		c := make([]byte, free)
		le.PutUint32(c, uint32(free))
		w.cells = append(w.cells, c...)
	}
	base := make([]byte, 4096)
	copy(base, "regf")
	le.PutUint32(base[4:], 1)
	le.PutUint32(base[8:], 1)
	le.PutUint32(base[20:], 1) // major
	le.PutUint32(base[24:], 5) // minor
	le.PutUint32(base[28:], 0) // primary file
	le.PutUint32(base[32:], 1) // direct memory load
	le.PutUint32(base[36:], rootOff)
	le.PutUint32(base[40:], uint32(binSize))
	le.PutUint32(base[44:], 1)
	var sum uint32
	for i := 0; i < 508; i += 4 {
		sum ^= le.Uint32(base[i:])
	}
	le.PutUint32(base[508:], sum)
	hbin := make([]byte, hbinHeader)
	copy(hbin, "hbin")
	le.PutUint32(hbin[8:], uint32(binSize))
	out := append(base, hbin...)
	return append(out, w.cells...)
}
