package vmdk

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// maxDescriptorBytes bounds a descriptor file (qemu reads at most 1 MiB).
const maxDescriptorBytes = 1 << 20

// Limits that keep a hostile descriptor from asking for absurd work.
const (
	maxExtentLines = 10000
	maxLineBytes   = 8192
)

// lineKind classifies one descriptor line.
type lineKind uint8

const (
	lineOther  lineKind = iota // comment, blank or unparsed text, kept verbatim
	lineHeader                 // key=value before the extents
	lineExtent                 // an extent description
	lineDDB                    // ddb.key = "value"
	// lineJunk is an unparsable line in the disk database, which comes
	// last in a descriptor: what a write torn by a crash leaves (a line cut
	// where one sector's new text meets the next sector's old). It is
	// skipped, and dropped when the descriptor is written again; the same
	// line before the database (the header, the extents) is corruption.
	lineJunk
)

type descLine struct {
	kind  lineKind
	text  string // the line as read or last written, without the newline
	key   string // header or ddb key, as written
	value string // unquoted value
}

// extentLine is one parsed extent description (§2.4).
type extentLine struct {
	Access  string // RW, RDONLY, NOACCESS
	Sectors int64
	Type    string // FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW
	File    string // empty for ZERO
	Offset  int64  // sectors, for FLAT
	Extra   string // fields after the offset, kept verbatim
}

// descriptor is a parsed text descriptor. It keeps every line so that an
// unchanged descriptor writes back byte for byte (§2.5 writer rule).
type descriptor struct {
	lines   []descLine
	extents []extentLine
	crlf    bool
	junk    int // lineJunk lines read
}

// parseDescriptor parses descriptor text. Trailing NUL padding is ignored.
func parseDescriptor(b []byte) (*descriptor, error) {
	if len(b) > maxDescriptorBytes {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: descriptor of %d bytes is too large", len(b))
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	d := &descriptor{crlf: bytes.Contains(b, []byte("\r\n"))}
	text := string(b)
	text = strings.TrimSuffix(text, "\n")
	sawVersion, sawDDB := false, false
	for _, raw := range strings.Split(text, "\n") {
		raw = strings.TrimSuffix(raw, "\r")
		if len(raw) > maxLineBytes {
			return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: descriptor line of %d bytes is too long", len(raw))
		}
		l := descLine{text: raw}
		t := strings.TrimSpace(raw)
		switch {
		case t == "" || strings.HasPrefix(t, "#"):
		case isExtentLine(t):
			e, err := parseExtentLine(t)
			if err != nil {
				return nil, err
			}
			if len(d.extents) >= maxExtentLines {
				return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: descriptor has more than %d extents", maxExtentLines)
			}
			d.extents = append(d.extents, e)
			l.kind = lineExtent
		default:
			k, v, ok := strings.Cut(t, "=")
			if !ok {
				if sawDDB {
					l.kind = lineJunk
					d.junk++
					break
				}
				return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: invalid descriptor line %q", clip(t))
			}
			l.key = strings.TrimSpace(k)
			l.value = unquote(strings.TrimSpace(v))
			l.kind = lineHeader
			if strings.HasPrefix(strings.ToLower(l.key), "ddb.") {
				l.kind = lineDDB
				if tv := strings.TrimSpace(v); strings.HasPrefix(tv, "\"") && (len(tv) < 2 || !strings.HasSuffix(tv, "\"")) {
					// A quoted value cut short: a torn line.
					l.kind = lineJunk
					d.junk++
				}
				sawDDB = true
			}
			if strings.EqualFold(l.key, "version") {
				sawVersion = true
			}
		}
		d.lines = append(d.lines, l)
	}
	if !sawVersion && len(d.extents) == 0 {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: not a VMDK descriptor (no version and no extents)")
	}
	if d.get("createType") == "" {
		return nil, disk.Errorf(disk.ErrCorrupt, "vmdk: invalid descriptor: no createType")
	}
	return d, nil
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' {
		if i := strings.IndexByte(v[1:], '"'); i >= 0 {
			return v[1 : 1+i]
		}
	}
	return v
}

func isExtentLine(t string) bool {
	f, _, _ := strings.Cut(t, " ")
	switch strings.ToUpper(f) {
	case "RW", "RDONLY", "NOACCESS":
		return !strings.Contains(f, "=")
	}
	return false
}

// parseExtentLine parses `ACCESS SIZE TYPE ["FILE" [OFFSET [EXTRA…]]]`.
func parseExtentLine(t string) (extentLine, error) {
	bad := func(why string) (extentLine, error) {
		return extentLine{}, disk.Errorf(disk.ErrCorrupt, "vmdk: invalid extent line %q: %s", clip(t), why)
	}
	var e extentLine
	fields := strings.Fields(t)
	if len(fields) < 3 {
		return bad("too few fields")
	}
	e.Access = strings.ToUpper(fields[0])
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || n <= 0 || n > 1<<47 {
		return bad("bad size")
	}
	e.Sectors = n
	e.Type = strings.ToUpper(fields[2])
	rest := strings.TrimSpace(t[strings.Index(t, fields[2])+len(fields[2]):])
	if rest != "" {
		if rest[0] != '"' {
			return bad("file name not quoted")
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return bad("unterminated file name")
		}
		e.File = rest[1 : 1+end]
		rest = strings.TrimSpace(rest[2+end:])
		if rest != "" {
			off, extra, _ := strings.Cut(rest, " ")
			o, err := strconv.ParseInt(off, 10, 64)
			if err != nil || o < 0 || o > 1<<50 {
				return bad("bad offset")
			}
			e.Offset = o
			e.Extra = strings.TrimSpace(extra)
		}
	}
	switch e.Type {
	case "ZERO":
	case "FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE", "VMFSRDM", "VMFSRAW":
		if e.File == "" {
			return bad("no file name")
		}
	default:
		return extentLine{}, disk.Errorf(disk.ErrNotSupported, "vmdk: unsupported extent type %q", e.Type)
	}
	switch e.Access {
	case "RW", "RDONLY", "NOACCESS":
	default:
		return bad("bad access mode")
	}
	return e, nil
}

func (e extentLine) String() string {
	s := fmt.Sprintf("%s %d %s", e.Access, e.Sectors, e.Type)
	if e.Type == "ZERO" {
		return s
	}
	s += fmt.Sprintf(" %q", e.File)
	if e.Type == "FLAT" || e.Offset != 0 || e.Extra != "" {
		s += " " + strconv.FormatInt(e.Offset, 10)
	}
	if e.Extra != "" {
		s += " " + e.Extra
	}
	return s
}

// get returns the value of a header or ddb key (case-insensitive), or "".
func (d *descriptor) get(key string) string {
	v, _ := d.lookup(key)
	return v
}

func (d *descriptor) lookup(key string) (string, bool) {
	for _, l := range d.lines {
		if (l.kind == lineHeader || l.kind == lineDDB) && strings.EqualFold(l.key, key) {
			return l.value, true
		}
	}
	return "", false
}

// set sets a header or ddb key, editing its line in place or adding one:
// header keys after the last header line, ddb keys at the end.
func (d *descriptor) set(key, value string) {
	ddb := strings.HasPrefix(strings.ToLower(key), "ddb.")
	text := key + "=" + quoteHeader(key, value)
	if ddb {
		text = key + " = " + strconv.Quote(value)
	}
	for i, l := range d.lines {
		if (l.kind == lineHeader || l.kind == lineDDB) && strings.EqualFold(l.key, key) {
			d.lines[i].text, d.lines[i].value = text, value
			return
		}
	}
	l := descLine{kind: lineHeader, text: text, key: key, value: value}
	if ddb {
		l.kind = lineDDB
		d.lines = append(d.lines, l)
		return
	}
	at := 0
	for i, x := range d.lines {
		if x.kind == lineHeader {
			at = i + 1
		}
	}
	d.lines = append(d.lines[:at], append([]descLine{l}, d.lines[at:]...)...)
}

// remove deletes a key's line.
func (d *descriptor) remove(key string) bool {
	for i, l := range d.lines {
		if (l.kind == lineHeader || l.kind == lineDDB) && strings.EqualFold(l.key, key) {
			d.lines = append(d.lines[:i], d.lines[i+1:]...)
			return true
		}
	}
	return false
}

// quoteHeader writes header values the way VMware does: CID, parentCID and
// version bare, everything else quoted.
func quoteHeader(key, value string) string {
	switch strings.ToLower(key) {
	case "cid", "parentcid", "version":
		return value
	}
	return strconv.Quote(value)
}

// setExtents replaces the extent lines (used when a disk grows).
func (d *descriptor) setExtents(ext []extentLine) {
	var out []descLine
	done := false
	for _, l := range d.lines {
		if l.kind != lineExtent {
			out = append(out, l)
			continue
		}
		if !done {
			for _, e := range ext {
				out = append(out, descLine{kind: lineExtent, text: e.String()})
			}
			done = true
		}
	}
	d.lines = out
	d.extents = ext
}

// ddbKeys returns the ddb keys in file order.
func (d *descriptor) ddbKeys() []string {
	var keys []string
	for _, l := range d.lines {
		if l.kind == lineDDB {
			keys = append(keys, l.key)
		}
	}
	return keys
}

// bytes renders the descriptor, ending with a newline.
func (d *descriptor) bytes() []byte {
	nl := "\n"
	if d.crlf {
		nl = "\r\n"
	}
	var b strings.Builder
	for _, l := range d.lines {
		if l.kind == lineJunk {
			continue
		}
		b.WriteString(l.text)
		b.WriteString(nl)
	}
	return []byte(b.String())
}

// cid returns a hex header value such as CID or parentCID; absent means
// 0xffffffff (no parent).
func (d *descriptor) hexValue(key string) (uint32, error) {
	v, ok := d.lookup(key)
	if !ok {
		return 0xffffffff, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 32)
	if err != nil {
		return 0, disk.Errorf(disk.ErrCorrupt, "vmdk: bad %s %q", key, clip(v))
	}
	return uint32(n), nil
}

// newCID returns a random content ID that is neither ffffffff nor fffffffe
// (§2.3).
func newCID() uint32 {
	var b [4]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		c := binary.LittleEndian.Uint32(b[:])
		if c < 0xfffffffe {
			return c
		}
	}
}

func formatCID(c uint32) string { return fmt.Sprintf("%08x", c) }

// newDescriptorText renders a fresh descriptor in the canonical layout that
// qemu and VMware write (§2.8).
func newDescriptorText(cid, parentCID uint32, createType, parentHint string, ext []extentLine, ddb [][2]string) []byte {
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\n")
	fmt.Fprintf(&b, "CID=%08x\nparentCID=%08x\n", cid, parentCID)
	fmt.Fprintf(&b, "createType=%q\n", createType)
	if parentHint != "" {
		fmt.Fprintf(&b, "parentFileNameHint=%q\n", parentHint)
	}
	b.WriteString("\n# Extent description\n")
	for _, e := range ext {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	b.WriteString("\n# The Disk Data Base\n#DDB\n\n")
	for _, kv := range ddb {
		fmt.Fprintf(&b, "%s = %q\n", kv[0], kv[1])
	}
	return []byte(b.String())
}
