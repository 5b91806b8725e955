package fat

import (
	"encoding/binary"
	"strings"
	"time"
	"unicode/utf16"
)

// Directory entry attributes.
const (
	attrReadOnly = 0x01
	attrHidden   = 0x02
	attrSystem   = 0x04
	attrVolume   = 0x08
	attrDir      = 0x10
	attrArchive  = 0x20
	attrLFN      = 0x0f
)

// entry is one file or directory of a directory.
type entry struct {
	name    string
	attr    byte
	cluster uint32
	size    int64
	mtime   time.Time
	atime   time.Time
	btime   time.Time
}

func (e *entry) isDir() bool { return e.attr&attrDir != 0 }

// readDir returns the entries of the directory starting at cluster c (0:
// the fixed root directory of FAT12/16, or FAT32's root cluster).
func (f *FS) readDir(c uint32) ([]entry, error) {
	if c == 0 && f.variant == FAT32 {
		c = f.rootCluster
	}
	f.dirMu.Lock()
	es, ok := f.dirCache[c]
	f.dirMu.Unlock()
	if ok {
		return es, nil
	}
	var b []byte
	if c == 0 {
		b = make([]byte, f.rootBytes)
		if f.rootOff+f.rootBytes > f.size {
			return nil, corrupt("root directory past the end of the volume")
		}
		if err := readFull(f.r, b, f.rootOff); err != nil {
			return nil, err
		}
	} else {
		runs, n, err := f.chain(c, maxDirBytes/f.clusterSize+1)
		if err != nil {
			return nil, err
		}
		if n*f.clusterSize > max(maxDirBytes, f.clusterSize) {
			return nil, corrupt("directory at cluster %d is larger than %d bytes", c, maxDirBytes)
		}
		b = make([]byte, 0, n*f.clusterSize)
	read:
		for _, r := range runs {
			o := int64(len(b))
			k := int64(r.n) * f.clusterSize
			b = b[:o+k]
			if err := f.readData(b[o:], f.clusterOff(r.first)); err != nil {
				return nil, err
			}
			for i := o; i < o+k; i += 32 {
				if b[i] == 0 { // the end of the directory
					b = b[:i]
					break read
				}
			}
		}
	}
	es = f.parseDir(b, c)
	f.dirMu.Lock()
	if f.dirEntries+len(es) > maxDirCache {
		clear(f.dirCache)
		f.dirEntries = 0
	}
	f.dirCache[c] = es
	f.dirEntries += len(es) + 1
	f.dirMu.Unlock()
	return es, nil
}

// readData reads clusters, checking them against the volume's size.
func (f *FS) readData(b []byte, off int64) error {
	if off+int64(len(b)) > f.size {
		return corrupt("cluster at byte %d past the end of the volume", off)
	}
	return readFull(f.r, b, off)
}

// rootLabel returns the volume label entry of the root directory, as
// blkid reads it.
func (f *FS) rootLabel() (string, bool) {
	f.dirMu.Lock()
	defer f.dirMu.Unlock()
	es := f.dirCache[f.rootCluster]
	for _, e := range es {
		if e.attr == 0xff { // the label pseudo-entry
			return e.name, true
		}
	}
	return "", false
}

// parseDir decodes the 32-byte entries of a directory, joining long file
// names to their short entries. Entries whose names cannot be io/fs path
// elements are skipped, as are "." and "..". The volume label (in the root
// directory) is kept as a pseudo-entry with attribute 0xff.
func (f *FS) parseDir(b []byte, c uint32) []entry {
	var es []entry
	var lfn [20 * 13]uint16
	lfnSeq, lfnSum, lfnLen := 0, byte(0), 0 // next expected sequence number; 0: none
	seen := map[string]bool{}
	for i := 0; i+32 <= len(b); i += 32 {
		d := b[i : i+32]
		if d[0] == 0 {
			break
		}
		if d[0] == 0xe5 {
			lfnSeq = 0
			continue
		}
		attr := d[11]
		if attr&0x3f == attrLFN {
			ord := int(d[0])
			n := ord & 0x1f
			switch {
			case n == 0 || n > 20:
				lfnSeq = 0
				continue
			case ord&0x40 != 0:
				lfnSeq, lfnSum, lfnLen = n, d[13], n*13
				for k := range lfn[:lfnLen] {
					lfn[k] = 0xffff
				}
			case lfnSeq == 0 || n != lfnSeq || d[13] != lfnSum:
				lfnSeq = 0
				continue
			}
			p := (n - 1) * 13
			for k := 0; k < 5; k++ {
				lfn[p+k] = binary.LittleEndian.Uint16(d[1+2*k:])
			}
			for k := 0; k < 6; k++ {
				lfn[p+5+k] = binary.LittleEndian.Uint16(d[14+2*k:])
			}
			for k := 0; k < 2; k++ {
				lfn[p+11+k] = binary.LittleEndian.Uint16(d[28+2*k:])
			}
			lfnSeq = n - 1
			if lfnSeq == 0 {
				lfnSeq = -1 // complete: the short entry comes next
			}
			continue
		}
		long := ""
		if lfnSeq == -1 && checksum(d[:11]) == lfnSum {
			u := lfn[:lfnLen]
			for k, v := range u {
				if v == 0 {
					u = u[:k]
					break
				}
			}
			long = string(utf16.Decode(u))
		}
		lfnSeq = 0
		if attr&attrVolume != 0 {
			if c == f.rootCluster && attr&attrDir == 0 {
				raw := make([]byte, 11)
				copy(raw, d[:11])
				if raw[0] == 0x05 {
					raw[0] = 0xe5
				}
				es = append(es, entry{name: decodeOEM(strings.TrimRight(string(raw), " ")), attr: 0xff})
			}
			continue
		}
		name := long
		if name == "" || !validLong(name) {
			name = shortName(d)
		}
		if name == "." || name == ".." || name == "" || strings.ContainsAny(name, "/\x00") {
			continue
		}
		if seen[name] {
			continue // a corrupt directory naming a file twice: keep the first
		}
		seen[name] = true
		le := binary.LittleEndian
		e := entry{
			name:    name,
			attr:    attr,
			cluster: uint32(le.Uint16(d[26:])),
			size:    int64(le.Uint32(d[28:])),
		}
		if f.variant == FAT32 {
			e.cluster |= uint32(le.Uint16(d[20:])) << 16
		}
		e.mtime = fatTime(le.Uint16(d[24:]), le.Uint16(d[22:]), 0)
		if cd := le.Uint16(d[16:]); cd != 0 {
			e.btime = fatTime(cd, le.Uint16(d[14:]), d[13])
		}
		if ad := le.Uint16(d[18:]); ad != 0 {
			e.atime = fatTime(ad, 0, 0)
		}
		if e.isDir() {
			e.size = 0
		}
		es = append(es, e)
	}
	return es
}

// validLong reports whether a decoded long name is usable; unpaired
// surrogates decode to U+FFFD, and such a name falls back to the short one.
func validLong(s string) bool { return !strings.ContainsRune(s, '\uFFFD') }

// checksum is the short name checksum kept in each long name entry.
func checksum(name []byte) byte {
	var s byte
	for _, c := range name[:11] {
		s = (s>>1 | s<<7) + c
	}
	return s
}

// shortName renders an 8.3 name as Linux's vfat shows it: the case flags
// of byte 12 (0x08 lowercase base, 0x10 lowercase extension) apply, and
// bytes above 0x7f are code page 437.
func shortName(d []byte) string {
	raw := make([]byte, 11)
	copy(raw, d[:11])
	if raw[0] == 0x05 {
		raw[0] = 0xe5
	}
	base := strings.TrimRight(string(raw[:8]), " ")
	ext := strings.TrimRight(string(raw[8:11]), " ")
	if d[12]&0x08 != 0 {
		base = asciiLower(base)
	}
	if d[12]&0x10 != 0 {
		ext = asciiLower(ext)
	}
	name := decodeOEM(base)
	if ext != "" {
		name += "." + decodeOEM(ext)
	}
	return name
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// decodeOEM decodes code page 437 bytes.
func decodeOEM(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 {
			b.WriteByte(c)
		} else {
			b.WriteRune(cp437[c-0x80])
		}
	}
	return b.String()
}

var cp437 = []rune("ÇüéâäàåçêëèïîìÄÅ" +
	"ÉæÆôöòûùÿÖÜ¢£¥₧ƒ" +
	"áíóúñÑªº¿⌐¬½¼¡«»" +
	"░▒▓│┤╡╢╖╕╣║╗╝╜╛┐" +
	"└┴┬├─┼╞╟╚╔╩╦╠═╬╧" +
	"╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀" +
	"αßΓπΣσµτΦΘΩδ∞φε∩" +
	"≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0")

// fatTime converts a FAT date and time (and hundredths of a second for
// creation times) to a time in UTC, as Linux's vfat does without a tz
// option. Out-of-range days and months are clamped as Linux clamps them.
func fatTime(date, tm uint16, tenth byte) time.Time {
	day := max(1, int(date&0x1f))
	month := max(1, int(date>>5&0xf))
	month = min(month, 12)
	year := 1980 + int(date>>9)
	sec := int(tm&0x1f) * 2
	minute := int(tm >> 5 & 0x3f)
	hour := int(tm >> 11)
	ns := 0
	if tenth < 200 {
		sec += int(tenth) / 100
		ns = int(tenth%100) * 10_000_000
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, ns, time.UTC)
}
