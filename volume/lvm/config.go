package lvm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// The text metadata is written in LVM's configuration syntax: a file is a
// list of items, each either "key = value" or "name { items }". A value is
// a double-quoted string (with \" and \\ escapes), an integer, a decimal
// number, or a bracketed, comma-separated array of strings and numbers.
// "#" starts a comment that runs to the end of the line.

// Limits on parsed text: metadata that breaks them is refused as corrupt.
const (
	MaxTextSize = 32 << 20 // bytes of one metadata copy
	maxDepth    = 16       // nesting of sections (LVM uses 4)
	maxItems    = 1 << 20  // keys, sections and array elements in one text
)

// Kind is the type of a Value.
type Kind uint8

// The kinds of values.
const (
	String Kind = iota + 1
	Int
	Float
	Array
)

// Value is a value in the configuration syntax.
type Value struct {
	Kind  Kind
	Str   string  // String, and Float as written
	Int   int64   // Int
	Array []Value // Array
}

// Section is a named group of keys and sections. The root section of a
// text has no name.
type Section struct {
	Name     string
	Keys     map[string]Value
	Sections []*Section
}

// Sub returns the named subsection, or nil.
func (s *Section) Sub(name string) *Section {
	if s == nil {
		return nil
	}
	for _, c := range s.Sections {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Str returns key's string value and whether it is a string.
func (s *Section) Str(key string) (string, bool) {
	if s == nil {
		return "", false
	}
	v, ok := s.Keys[key]
	if !ok || v.Kind != String {
		return "", false
	}
	return v.Str, true
}

// Int returns key's integer value and whether it is an integer.
func (s *Section) Int(key string) (int64, bool) {
	if s == nil {
		return 0, false
	}
	v, ok := s.Keys[key]
	if !ok || v.Kind != Int {
		return 0, false
	}
	return v.Int, true
}

// Strings returns key's array of strings (non-strings are skipped), or nil.
func (s *Section) Strings(key string) []string {
	if s == nil {
		return nil
	}
	v, ok := s.Keys[key]
	if !ok || v.Kind != Array {
		return nil
	}
	var out []string
	for _, e := range v.Array {
		if e.Kind == String {
			out = append(out, e.Str)
		}
	}
	return out
}

// Parse parses text in LVM's configuration syntax. Text larger than
// MaxTextSize, nested deeper than 16 sections or holding more than a
// million items is refused; any syntax error gives an error matching
// disk.ErrCorrupt. A NUL byte ends the text (metadata areas pad with NULs).
func Parse(text []byte) (*Section, error) {
	if len(text) > MaxTextSize {
		return nil, disk.Errorf(disk.ErrCorrupt, "lvm: metadata text of %d bytes is larger than %d", len(text), MaxTextSize)
	}
	if i := strings.IndexByte(string(text), 0); i >= 0 {
		text = text[:i]
	}
	p := &parser{s: text, line: 1}
	root := &Section{Keys: map[string]Value{}}
	if err := p.items(root, 0); err != nil {
		return nil, err
	}
	if p.pos < len(p.s) {
		return nil, p.errorf("unexpected %q", p.s[p.pos])
	}
	return root, nil
}

type parser struct {
	s     []byte
	pos   int
	line  int
	count int
}

func (p *parser) errorf(format string, args ...any) error {
	return disk.Errorf(disk.ErrCorrupt, "lvm: metadata line %d: %s", p.line, fmt.Sprintf(format, args...))
}

// skip passes white space and comments.
func (p *parser) skip() {
	for p.pos < len(p.s) {
		switch c := p.s[p.pos]; c {
		case '\n':
			p.line++
			p.pos++
		case ' ', '\t', '\r', '\f', '\v':
			p.pos++
		case '#':
			for p.pos < len(p.s) && p.s[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isNameByte(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '\f', '\v', '=', '{', '}', '[', ']', '"', '#', ',':
		return false
	}
	return c > ' ' && c < 0x7f
}

// items parses the body of sec up to a closing brace (depth > 0) or the
// end of the text (depth 0).
func (p *parser) items(sec *Section, depth int) error {
	for {
		p.skip()
		if p.pos >= len(p.s) {
			if depth > 0 {
				return p.errorf("section %q is not closed", sec.Name)
			}
			return nil
		}
		if p.s[p.pos] == '}' {
			if depth == 0 {
				return p.errorf("unexpected '}'")
			}
			p.pos++
			return nil
		}
		start := p.pos
		for p.pos < len(p.s) && isNameByte(p.s[p.pos]) {
			p.pos++
		}
		if p.pos == start {
			return p.errorf("unexpected %q", p.s[p.pos])
		}
		name := string(p.s[start:p.pos])
		if p.count++; p.count > maxItems {
			return p.errorf("more than %d items", maxItems)
		}
		p.skip()
		if p.pos >= len(p.s) {
			return p.errorf("%q: unexpected end of text", name)
		}
		switch p.s[p.pos] {
		case '{':
			if depth+1 > maxDepth {
				return p.errorf("sections nested deeper than %d", maxDepth)
			}
			p.pos++
			sub := &Section{Name: name, Keys: map[string]Value{}}
			if err := p.items(sub, depth+1); err != nil {
				return err
			}
			sec.Sections = append(sec.Sections, sub)
		case '=':
			p.pos++
			v, err := p.value(true)
			if err != nil {
				return err
			}
			sec.Keys[name] = v
		default:
			return p.errorf("%q is followed by %q, not '=' or '{'", name, p.s[p.pos])
		}
	}
}

// value parses a string, a number or (when array is true) an array.
func (p *parser) value(array bool) (Value, error) {
	p.skip()
	if p.pos >= len(p.s) {
		return Value{}, p.errorf("missing value")
	}
	switch c := p.s[p.pos]; {
	case c == '"':
		return p.str()
	case c == '[' && array:
		p.pos++
		v := Value{Kind: Array, Array: []Value{}}
		for {
			p.skip()
			if p.pos < len(p.s) && p.s[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			if len(v.Array) > 0 {
				if p.pos >= len(p.s) || p.s[p.pos] != ',' {
					return Value{}, p.errorf("array elements must be separated by ','")
				}
				p.pos++
			}
			if p.count++; p.count > maxItems {
				return Value{}, p.errorf("more than %d items", maxItems)
			}
			e, err := p.value(false)
			if err != nil {
				return Value{}, err
			}
			v.Array = append(v.Array, e)
		}
	case c == '-' || c == '+' || (c >= '0' && c <= '9'):
		start := p.pos
		p.pos++
		for p.pos < len(p.s) && (p.s[p.pos] >= '0' && p.s[p.pos] <= '9' || p.s[p.pos] == '.') {
			p.pos++
		}
		num := string(p.s[start:p.pos])
		if strings.Contains(num, ".") {
			if _, err := strconv.ParseFloat(num, 64); err != nil {
				return Value{}, p.errorf("bad number %q", num)
			}
			return Value{Kind: Float, Str: num}, nil
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return Value{}, p.errorf("bad integer %q", num)
		}
		return Value{Kind: Int, Int: n}, nil
	default:
		return Value{}, p.errorf("unexpected %q in a value", c)
	}
}

func (p *parser) str() (Value, error) {
	p.pos++ // the opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch c {
		case '"':
			return Value{Kind: String, Str: b.String()}, nil
		case '\\':
			if p.pos >= len(p.s) {
				return Value{}, p.errorf("unterminated string")
			}
			c = p.s[p.pos]
			p.pos++
		case '\n':
			p.line++
		}
		b.WriteByte(c)
	}
	return Value{}, p.errorf("unterminated string")
}
