package winreg

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/vdisk-project/vdisk/disk"
)

var le = binary.LittleEndian

// Value types.
const (
	TypeNone     = 0
	TypeSZ       = 1
	TypeExpandSZ = 2
	TypeBinary   = 3
	TypeDWord    = 4
	TypeDWordBE  = 5
	TypeLink     = 6
	TypeMultiSZ  = 7
	TypeQWord    = 11
)

// Limits on what a hive may make the reader do.
const (
	baseBlockSize = 4096
	maxHiveSize   = 4 << 30  // bytes of hive bins
	maxCell       = 16 << 20 // bytes of one cell
	maxValueData  = 16 << 20 // bytes of one value's data
	maxListDepth  = 8        // ri lists inside ri lists
	maxSubkeys    = 1 << 20  // subkeys of one key
	maxValues     = 1 << 20  // values of one key
	bigDataChunk  = 16344    // bytes per big-data segment
)

// Hive is a registry hive file (regf). It is safe for concurrent use if
// its io.ReaderAt is.
type Hive struct {
	r    io.ReaderAt
	size int64 // bytes of hive bins after the base block
	root uint32
	// minor is the format's minor version: big data ("db") cells exist
	// from 1.4.
	minor uint32
}

// Open reads a hive's base block from r (the size bytes of the file).
// The base block's checksum is not required to match (Windows rewrites it
// lazily), but the root cell must lie inside the hive bins.
func Open(r io.ReaderAt, size int64) (*Hive, error) {
	b := make([]byte, baseBlockSize)
	if size < baseBlockSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: file of %d bytes too small for a hive", size)
	}
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, disk.Wrap(err, "winreg: read base block", "", 0)
	}
	if string(b[:4]) != "regf" {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: bad magic %q", b[:4])
	}
	if major := le.Uint32(b[20:]); major != 1 {
		return nil, disk.Errorf(disk.ErrNotSupported, "winreg: hive format version %d", major)
	}
	h := &Hive{r: r, root: le.Uint32(b[36:]), minor: le.Uint32(b[24:])}
	bins := int64(le.Uint32(b[40:]))
	h.size = min(size-baseBlockSize, maxHiveSize)
	if bins > 0 && bins < h.size {
		h.size = bins
	}
	if _, err := h.cell(h.root); err != nil {
		return nil, fmt.Errorf("winreg: root key: %w", err)
	}
	return h, nil
}

// cell returns the data of the allocated cell at off (relative to the
// first hive bin).
func (h *Hive) cell(off uint32) ([]byte, error) {
	if off == 0xffffffff || int64(off)+4 > h.size || off&7 != 0 {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: cell offset 0x%x out of range", off)
	}
	var hb [4]byte
	if err := h.read(hb[:], int64(off)); err != nil {
		return nil, err
	}
	n := int32(le.Uint32(hb[:]))
	if n >= 0 {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: cell at 0x%x is free", off)
	}
	sz := -int64(n)
	if sz < 8 || sz > maxCell || int64(off)+sz > h.size {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: cell at 0x%x of %d bytes out of range", off, sz)
	}
	b := make([]byte, sz-4)
	if err := h.read(b, int64(off)+4); err != nil {
		return nil, err
	}
	return b, nil
}

func (h *Hive) read(b []byte, off int64) error {
	n, err := h.r.ReadAt(b, baseBlockSize+off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return disk.Wrap(err, "winreg: read", "", baseBlockSize+off)
}

// Key is one registry key.
type Key struct {
	h    *Hive
	Name string
	// values and subkeys
	nSub, subList uint32
	nVal, valList uint32
}

// Root returns the hive's root key.
func (h *Hive) Root() (*Key, error) { return h.key(h.root) }

func (h *Hive) key(off uint32) (*Key, error) {
	b, err := h.cell(off)
	if err != nil {
		return nil, err
	}
	if len(b) < 76 || string(b[:2]) != "nk" {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: cell at 0x%x is not a key", off)
	}
	nl := int(le.Uint16(b[72:]))
	if 76+nl > len(b) {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: key name at 0x%x past its cell", off)
	}
	k := &Key{
		h:       h,
		nSub:    le.Uint32(b[20:]),
		subList: le.Uint32(b[28:]),
		nVal:    le.Uint32(b[36:]),
		valList: le.Uint32(b[40:]),
	}
	k.Name = decodeName(b[76:76+nl], le.Uint16(b[2:])&0x20 != 0)
	if k.nSub > maxSubkeys || k.nVal > maxValues {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: key %q claims %d subkeys and %d values", k.Name, k.nSub, k.nVal)
	}
	return k, nil
}

// decodeName decodes a key or value name: Latin-1 when compressed, else
// UTF-16LE.
func decodeName(b []byte, compressed bool) string {
	if compressed {
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r)
	}
	return utf16String(b)
}

func utf16String(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = le.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// Subkeys lists k's subkeys in the order the hive keeps them.
func (k *Key) Subkeys() ([]*Key, error) {
	if k.nSub == 0 {
		return nil, nil
	}
	var offs []uint32
	if err := k.h.subkeyList(k.subList, 0, &offs, k.nSub); err != nil {
		return nil, fmt.Errorf("winreg: subkeys of %q: %w", k.Name, err)
	}
	out := make([]*Key, 0, len(offs))
	for _, o := range offs {
		s, err := k.h.key(o)
		if err != nil {
			return nil, fmt.Errorf("winreg: subkey of %q: %w", k.Name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// subkeyList gathers the key offsets of an lf, lh, li or ri list.
func (h *Hive) subkeyList(off uint32, depth int, out *[]uint32, limit uint32) error {
	if depth > maxListDepth {
		return disk.Errorf(disk.ErrCorrupt, "winreg: subkey lists nested deeper than %d", maxListDepth)
	}
	b, err := h.cell(off)
	if err != nil {
		return err
	}
	if len(b) < 4 {
		return disk.Errorf(disk.ErrCorrupt, "winreg: subkey list at 0x%x too short", off)
	}
	n := int(le.Uint16(b[2:]))
	stride := 8
	switch string(b[:2]) {
	case "lf", "lh":
	case "li", "ri":
		stride = 4
	default:
		return disk.Errorf(disk.ErrCorrupt, "winreg: cell at 0x%x is not a subkey list (%q)", off, b[:2])
	}
	if 4+n*stride > len(b) {
		return disk.Errorf(disk.ErrCorrupt, "winreg: subkey list at 0x%x of %d entries past its cell", off, n)
	}
	for i := range n {
		o := le.Uint32(b[4+i*stride:])
		if string(b[:2]) == "ri" {
			if err := h.subkeyList(o, depth+1, out, limit); err != nil {
				return err
			}
			continue
		}
		if uint32(len(*out)) >= limit {
			return disk.Errorf(disk.ErrCorrupt, "winreg: more subkeys listed than the key's %d", limit)
		}
		*out = append(*out, o)
	}
	return nil
}

// Subkey returns k's subkey with the given name, compared without regard
// to case as Windows does. A missing key gives an error matching
// disk.ErrNotFound.
func (k *Key) Subkey(name string) (*Key, error) {
	subs, err := k.Subkeys()
	if err != nil {
		return nil, err
	}
	for _, s := range subs {
		if strings.EqualFold(s.Name, name) {
			return s, nil
		}
	}
	return nil, disk.Errorf(disk.ErrNotFound, "winreg: no key %q in %q", name, k.Name)
}

// Lookup follows a backslash-separated path of subkeys from k.
func (k *Key) Lookup(path string) (*Key, error) {
	for _, p := range strings.Split(path, `\`) {
		if p == "" {
			continue
		}
		var err error
		if k, err = k.Subkey(p); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Value is one named value of a key.
type Value struct {
	h    *Hive
	Name string // "" for the key's default value
	Type uint32
	size uint32
	data uint32 // offset of the data cell, or the data itself
}

// Values lists k's values.
func (k *Key) Values() ([]*Value, error) {
	if k.nVal == 0 {
		return nil, nil
	}
	b, err := k.h.cell(k.valList)
	if err != nil {
		return nil, fmt.Errorf("winreg: values of %q: %w", k.Name, err)
	}
	if int64(k.nVal)*4 > int64(len(b)) {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value list of %q: %d values past its cell", k.Name, k.nVal)
	}
	out := make([]*Value, 0, k.nVal)
	for i := range k.nVal {
		v, err := k.h.value(le.Uint32(b[4*i:]))
		if err != nil {
			return nil, fmt.Errorf("winreg: value of %q: %w", k.Name, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func (h *Hive) value(off uint32) (*Value, error) {
	b, err := h.cell(off)
	if err != nil {
		return nil, err
	}
	if len(b) < 20 || string(b[:2]) != "vk" {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: cell at 0x%x is not a value", off)
	}
	nl := int(le.Uint16(b[2:]))
	if 20+nl > len(b) {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value name at 0x%x past its cell", off)
	}
	return &Value{
		h:    h,
		Name: decodeName(b[20:20+nl], le.Uint16(b[16:])&1 != 0),
		size: le.Uint32(b[4:]),
		data: le.Uint32(b[8:]),
		Type: le.Uint32(b[12:]),
	}, nil
}

// Value returns k's value with the given name ("" for the default),
// compared without regard to case. A missing value gives an error
// matching disk.ErrNotFound.
func (k *Key) Value(name string) (*Value, error) {
	vs, err := k.Values()
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if strings.EqualFold(v.Name, name) {
			return v, nil
		}
	}
	return nil, disk.Errorf(disk.ErrNotFound, "winreg: no value %q in %q", name, k.Name)
}

// Data returns the value's raw bytes: data of up to 4 bytes stored in
// the value itself, one data cell, or the segments of a big data ("db")
// cell. Data over 16 MiB is refused.
func (v *Value) Data() ([]byte, error) {
	if v.size&0x80000000 != 0 {
		n := v.size &^ 0x80000000
		if n > 4 {
			return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value %q: %d inline data bytes", v.Name, n)
		}
		b := le.AppendUint32(nil, v.data)
		return b[:n], nil
	}
	n := int(v.size)
	if n == 0 {
		return []byte{}, nil
	}
	if n > maxValueData {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value %q of %d bytes larger than %d", v.Name, n, maxValueData)
	}
	b, err := v.h.cell(v.data)
	if err != nil {
		return nil, fmt.Errorf("winreg: value %q: %w", v.Name, err)
	}
	if n > bigDataChunk && v.h.minor >= 4 && len(b) >= 8 && string(b[:2]) == "db" {
		return v.h.bigData(v.Name, b, n)
	}
	if n > len(b) {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value %q of %d bytes past its %d-byte cell", v.Name, n, len(b))
	}
	return b[:n], nil
}

func (h *Hive) bigData(name string, db []byte, n int) ([]byte, error) {
	segs := int(le.Uint16(db[2:]))
	if segs*bigDataChunk < n {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value %q: %d segments hold less than %d bytes", name, segs, n)
	}
	list, err := h.cell(le.Uint32(db[4:]))
	if err != nil {
		return nil, fmt.Errorf("winreg: value %q: %w", name, err)
	}
	if segs*4 > len(list) {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value %q: segment list past its cell", name)
	}
	out := make([]byte, 0, n)
	for i := 0; i < segs && len(out) < n; i++ {
		s, err := h.cell(le.Uint32(list[4*i:]))
		if err != nil {
			return nil, fmt.Errorf("winreg: value %q: %w", name, err)
		}
		k := min(n-len(out), bigDataChunk, len(s))
		out = append(out, s[:k]...)
	}
	if len(out) < n {
		return nil, disk.Errorf(disk.ErrCorrupt, "winreg: value %q: segments hold %d of %d bytes", name, len(out), n)
	}
	return out, nil
}

// String returns a REG_SZ or REG_EXPAND_SZ value (UTF-16LE, up to the
// first NUL), or a REG_DWORD as its decimal form.
func (v *Value) String() (string, error) {
	b, err := v.Data()
	if err != nil {
		return "", err
	}
	switch v.Type {
	case TypeSZ, TypeExpandSZ, TypeLink:
		s := utf16String(b)
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return s, nil
	case TypeDWord, TypeQWord:
		u, err := v.Uint()
		return fmt.Sprint(u), err
	}
	return "", disk.Errorf(disk.ErrInvalid, "winreg: value %q of type %d is not a string", v.Name, v.Type)
}

// Uint returns a REG_DWORD, REG_DWORD_BIG_ENDIAN or REG_QWORD value.
func (v *Value) Uint() (uint64, error) {
	b, err := v.Data()
	if err != nil {
		return 0, err
	}
	switch {
	case v.Type == TypeDWord && len(b) >= 4:
		return uint64(le.Uint32(b)), nil
	case v.Type == TypeDWordBE && len(b) >= 4:
		return uint64(binary.BigEndian.Uint32(b)), nil
	case v.Type == TypeQWord && len(b) >= 8:
		return le.Uint64(b), nil
	}
	return 0, disk.Errorf(disk.ErrInvalid, "winreg: value %q of type %d and %d bytes is not a number", v.Name, v.Type, len(b))
}
