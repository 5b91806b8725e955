package cli

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"

	"github.com/vdisk-project/vdisk"

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

// forceShareFlags registers qemu-img's -U and its long form --force-share,
// which open a local image without image locks (see disk.LockImage).
func forceShareFlags(fs *flag.FlagSet, p *bool) {
	const usage = "force shared access: open local images without image locks, even while another process writes them (read-only opens only)"
	fs.BoolVar(p, "U", false, usage)
	fs.BoolVar(p, "force-share", false, usage)
}

// lockFile holds the image locks of the file name (as a writer when
// write) until the returned function is called, for commands that reach an
// image's files without opening it as a disk.
func lockFile(name string, write bool) (func(), error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, disk.Wrap(err, "open", name, -1)
	}
	if err := disk.LockImage(f, disk.ImageLock{Write: write}); err != nil {
		f.Close()
		return nil, disk.Wrap(err, "lock", name, -1)
	}
	return func() { f.Close() }, nil
}

// isURI reports whether an image argument is an NBD URI rather than a path.
func isURI(s string) bool {
	for _, p := range []string{"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+tcp://", "nbds+tcp://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// openImage opens an image for a command: a path, an NBD URI, or a disk of
// the host of the saved login, "vdisk:vm/VM/KEY[@SNAPSHOT]" or
// "vdisk:disk/NAME[@SNAPSHOT]", through the kit and its transports.
// Read-only commands pass o.ReadOnly.
func openImage(ctx context.Context, name, fmtName string, o format.OpenOptions) (disk.Disk, format.Format, error) {
	if ref, ok := strings.CutPrefix(name, "point:"); ok {
		if !o.ReadOnly {
			return nil, "", disk.Errorf(disk.ErrPermission, "%s: a backup point is read-only (export it with --overlay to write)", name)
		}
		d, err := openPointDisk(ctx, ref)
		return d, format.Raw, err
	}
	if spec, ok := strings.CutPrefix(name, "vdisk:"); ok {
		d, err := openHostDisk(ctx, spec, o.ReadOnly)
		return d, format.Raw, err
	}
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
	if o.ForceShare && !o.ReadOnly {
		return nil, "", usagef("-U/--force-share can only be used with read-only images")
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

// kitConfig reads the kit's config file: $VDISK_KIT_CONFIG, or vdisk.conf
// in the config directory when it exists.
func kitConfig() (*vdisk.Config, error) {
	p := os.Getenv("VDISK_KIT_CONFIG")
	if p == "" {
		lp, err := loginPath()
		if err != nil {
			return nil, nil
		}
		p = filepath.Join(filepath.Dir(lp), "vdisk.conf")
		if _, err := os.Stat(p); err != nil {
			return nil, nil
		}
	}
	return vdisk.LoadConfig(p)
}

// hostConn connects the kit to the host of the saved login, with the kit
// config (transports, timeouts); $VDISK_TRANSPORTS overrides the
// transport list. what names the operation for the not-logged-in error.
func hostConn(ctx context.Context, what string) (*vdisk.Conn, error) {
	l, err := readLogin()
	if err != nil {
		return nil, err
	}
	if l.Token == "" {
		return nil, disk.Errorf(disk.ErrPermission, "%s: not logged in; run 'vdisk login' first", what)
	}
	cfg, err := kitConfig()
	if err != nil {
		return nil, err
	}
	return vdisk.Connect(ctx, vdisk.ConnectParams{Server: l.Server, Thumbprint: l.Thumbprint, Token: l.Token,
		Transports: os.Getenv("VDISK_TRANSPORTS"), Config: cfg})
}

// hostHandle is a kit handle that closes its connection with it.
type hostHandle struct {
	*vdisk.Handle
	c *vdisk.Conn
}

func (h hostHandle) Close() error {
	err := h.Handle.Close()
	if cerr := h.c.Close(); err == nil {
		err = cerr
	}
	return err
}

// openHostDisk opens a host disk through the kit with the saved login
// and the kit config (transports, timeouts); $VDISK_TRANSPORTS overrides
// the transport list.
func openHostDisk(ctx context.Context, spec string, readOnly bool) (disk.Disk, error) {
	c, err := hostConn(ctx, "vdisk:"+spec)
	if err != nil {
		return nil, err
	}
	var flags vdisk.OpenFlags
	if readOnly {
		flags |= vdisk.OpenReadOnly
	}
	h, err := c.Open(ctx, vdisk.ParseSpec(spec), flags)
	if err != nil {
		c.Close()
		return nil, err
	}
	return hostHandle{h, c}, nil
}
