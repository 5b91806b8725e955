package vmdk

import (
	"path/filepath"

	"github.com/vdisk-project/vdisk/disk"
)

// This file computes which bytes of which files the extent lines of a
// descriptor reference, so that nothing that rewrites metadata or cuts a
// file (repair, a descriptor rewrite) touches data an extent still reads.
// A file may hold several things: Haiku's vmdkimage writes a KDMV header of
// capacity 0 whose embedded descriptor names a FLAT extent inside the same
// file (§2.7), and hand-made descriptors may place a FLAT extent in a file
// that is also a sparse extent.

// byteRange is the bytes [off, end) of a file.
type byteRange struct{ off, end int64 }

// fileRefs maps a file (by fileKey) to the byte ranges extents reference in
// it.
type fileRefs map[string][]byteRange

// fileKey names a file for comparisons: absolute and cleaned when possible.
// Two names of one file through links are not recognised as the same.
func fileKey(name string) string {
	if abs, err := filepath.Abs(name); err == nil {
		return abs
	}
	return filepath.Clean(name)
}

// extentFileName resolves an extent line's file name against the directory
// of its descriptor.
func extentFileName(dir, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

// flatRefs returns the ranges the FLAT and VMFS lines of desc reference,
// by file. Sparse and delta extents are not listed: their own checks know
// which of their bytes are metadata and grains.
func flatRefs(dir string, desc *descriptor) fileRefs {
	refs := fileRefs{}
	if desc == nil {
		return refs
	}
	for _, el := range desc.extents {
		if el.Type != "FLAT" && el.Type != "VMFS" || el.Sectors <= 0 || el.Offset < 0 {
			continue
		}
		off := el.Offset * disk.SectorSize
		end := (el.Offset + el.Sectors) * disk.SectorSize
		if end < off { // overflow from a hostile line: protect everything after off
			end = 1<<63 - 1
		}
		k := fileKey(extentFileName(dir, el.File))
		refs[k] = append(refs[k], byteRange{off, end})
	}
	return refs
}

// add records r as referenced in file name.
func (r fileRefs) add(name string, br byteRange) {
	k := fileKey(name)
	r[k] = append(r[k], br)
}

// of returns the ranges referenced in file name.
func (r fileRefs) of(name string) []byteRange { return r[fileKey(name)] }

// overlaps reports whether [off, end) shares a byte with any of rs.
func overlaps(rs []byteRange, off, end int64) bool {
	for _, x := range rs {
		if off < x.end && x.off < end {
			return true
		}
	}
	return false
}

// refEnd returns the end of the last referenced byte of rs: a file must not
// be cut below it.
func refEnd(rs []byteRange) int64 {
	var n int64
	for _, x := range rs {
		n = max(n, x.end)
	}
	return n
}
