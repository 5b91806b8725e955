// Package conffile parses the configuration files of vdisk and its kit:
// one "key = value" per line, '#' starting a comment, values optionally in
// double quotes. It is VixDiskLib's config format, which backup vendors
// already write.
package conffile

import (
	"bufio"
	"bytes"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// MaxSize bounds a config file.
const MaxSize = 1 << 20

// Pair is one setting and the line it came from.
type Pair struct {
	Key, Value string
	Line       int
}

// Parse reads the settings of a file named name (for messages), in file
// order. A line that is not "key = value" is ErrInvalid with its number.
func Parse(b []byte, name string) ([]Pair, error) {
	if len(b) > MaxSize {
		return nil, disk.Errorf(disk.ErrInvalid, "config %s: larger than %d bytes", name, MaxSize)
	}
	var out []Pair
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), MaxSize)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, disk.Errorf(disk.ErrInvalid, "config %s:%d: want key = value", name, n)
		}
		out = append(out, Pair{Key: k, Value: strings.Trim(v, `"`), Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, disk.Errorf(disk.ErrInvalid, "config %s: %v", name, err)
	}
	return out, nil
}
