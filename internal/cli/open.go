package cli

import (
	"context"
	"os"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/nbd"
)

// readOnly refuses writes on a handle a read-only command opened.
type readOnly struct{ *nbd.Client }

func (r readOnly) WriteAt([]byte, int64) (int, error) {
	return 0, disk.Errorf(disk.ErrPermission, "opened read-only")
}

func (r readOnly) ReadOnly() bool { return true }

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
		c, err := nbd.Dial(ctx, name, &nbd.ClientOptions{Thumbprint: os.Getenv("VDISK_NBD_THUMBPRINT")})
		if err != nil {
			return nil, "", err
		}
		if o.ReadOnly {
			return readOnly{c}, format.Raw, nil
		}
		return c, format.Raw, nil
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
