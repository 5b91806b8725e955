package cli

import (
	"context"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
)

// isURI reports whether an image argument is an NBD URI rather than a path.
func isURI(s string) bool {
	for _, p := range []string{"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+tcp://", "nbds+tcp://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// openImage opens an image path (or, once the NBD client is wired in, an
// NBD URI) for a command. Read-only commands pass readOnly.
func openImage(ctx context.Context, name, fmtName string, o format.OpenOptions) (disk.Disk, format.Format, error) {
	if isURI(name) {
		return nil, "", disk.Errorf(disk.ErrNotSupported, "NBD URIs are not supported by this build yet: %s", name)
	}
	if fmtName != "" {
		f, err := checkFormat(fmtName)
		if err != nil {
			return nil, "", err
		}
		o.Format = f
	}
	return format.Open(ctx, name, &o)
}

func checkFormat(name string) (format.Format, error) {
	for _, f := range format.Formats {
		if string(f) == name {
			return f, nil
		}
	}
	return "", usagef("unknown format %q (known: raw, vmdk)", name)
}
