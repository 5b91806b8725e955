package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/volume/extract"
	"github.com/vdisk-project/vdisk/volume/inode"
	"github.com/vdisk-project/vdisk/volume/mount"
)

// The file commands take one image, or several followed by "--":
//
//	vdisk ls IMG /etc
//	vdisk ls disk1.vmdk disk2.vmdk -- /etc
//
// so that an image path and a path inside the guest never look alike.
type fileArgs struct {
	images []string
	rest   []string
}

func parseFileArgs(fs *flag.FlagSet, args []string, allImages bool) (fileArgs, error) {
	var fa fileArgs
	left, right, sep := args, []string(nil), false
	for i, a := range args {
		if a == "--" {
			left, right, sep = args[:i], args[i+1:], true
			break
		}
	}
	pos, err := parse(fs, left)
	if err != nil {
		return fa, err
	}
	if sep {
		more, err := parse(fs, right)
		if err != nil {
			return fa, err
		}
		fa.images, fa.rest = pos, more
	} else if allImages {
		fa.images = pos
	} else if len(pos) > 0 {
		fa.images, fa.rest = pos[:1], pos[1:]
	}
	if len(fa.images) == 0 {
		return fa, usagef("no image given")
	}
	return fa, nil
}

// guestPath turns a path inside the guest ("/etc/passwd", "etc", "/")
// into an io/fs name.
func guestPath(p string) (string, error) {
	n := strings.Trim(path.Clean("/"+p), "/")
	if n == "" {
		n = "."
	}
	if !fs.ValidPath(n) {
		return "", usagef("invalid path %q", p)
	}
	return n, nil
}

func cmdVolumes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("volumes", flag.ContinueOnError)
	output := fl.String("output", "human", "output format: human or json")
	var share bool
	forceShareFlags(fl, &share)
	fa, err := parseFileArgs(fl, args, true)
	if err != nil {
		return err
	}
	g, err := openGuest(ctx, fa.images, share)
	if err != nil {
		return err
	}
	defer g.Close()
	if *output == "json" {
		type diskJSON struct {
			Index int    `json:"index"`
			Image string `json:"image"`
			Size  int64  `json:"size"`
		}
		out := struct {
			Disks    []diskJSON    `json:"disks"`
			Volumes  []guestVolume `json:"volumes"`
			OS       *guestOS      `json:"os,omitempty"`
			Problems []string      `json:"problems,omitempty"`
		}{Volumes: g.vols, OS: g.os, Problems: g.problems}
		for i, d := range g.disks {
			out.Disks = append(out.Disks, diskJSON{i, g.images[i], d.Size()})
		}
		if out.Volumes == nil {
			out.Volumes = []guestVolume{}
		}
		return writeJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tVOLUME\tKIND\tSTART\tSIZE\tFS\tLABEL\tUUID\tMOUNT\tNOTE")
	for i, v := range g.vols {
		note := v.Unsupported
		if note == "" && v.PartType != "" {
			note = v.PartType
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, v.ID, v.Kind, v.Start, humanSize(v.Size),
			dash(v.FSType), dash(v.Label), dash(v.UUID), dash(v.MountPoint), note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range g.problems {
		fmt.Fprintf(stdout, "problem: %s\n", p)
	}
	if g.os != nil && (g.os.Pretty != "" || g.os.Name != "") {
		name := g.os.Pretty
		if name == "" {
			name = strings.TrimSpace(g.os.Name + " " + g.os.Version)
		}
		fmt.Fprintf(stdout, "OS: %s (root volume %s)\n", name, g.os.RootID)
	}
	return nil
}

// openGuestFS opens the images, picks a volume and opens its filesystem.
func openGuestFS(ctx context.Context, images []string, sel string, share bool) (*guestSet, inode.FS, error) {
	g, err := openGuest(ctx, images, share)
	if err != nil {
		return nil, nil, err
	}
	v, err := g.pick(sel)
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	f, err := v.fs()
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	return g, f, nil
}

// lsEntry is one line of ls, and one object of its JSON output.
type lsEntry struct {
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Type   string    `json:"type"` // file, dir, symlink, char, block, fifo, socket
	Mode   string    `json:"mode"` // as ls -l prints it
	Perm   uint32    `json:"perm"` // octal permission bits incl. setuid/setgid/sticky
	Nlink  uint32    `json:"nlink"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Size   int64     `json:"size"`
	Alloc  int64     `json:"allocated"`
	Mtime  time.Time `json:"mtime"`
	Target string    `json:"target,omitempty"`
	Ino    uint64    `json:"inode,omitempty"`
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "char"
	case m&fs.ModeDevice != 0:
		return "block"
	}
	return "file"
}

// lsMode prints a mode as ls -l does ("drwxr-xr-x", "-rwsr-xr-x", "lrwxrwxrwx").
func lsMode(m fs.FileMode) string {
	b := []byte("----------")
	switch fileType(m) {
	case "dir":
		b[0] = 'd'
	case "symlink":
		b[0] = 'l'
	case "fifo":
		b[0] = 'p'
	case "socket":
		b[0] = 's'
	case "char":
		b[0] = 'c'
	case "block":
		b[0] = 'b'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	special := func(i int, on bool, set, unset byte) {
		if !on {
			return
		}
		if b[i] == 'x' {
			b[i] = set
		} else {
			b[i] = unset
		}
	}
	special(3, m&fs.ModeSetuid != 0, 's', 'S')
	special(6, m&fs.ModeSetgid != 0, 's', 'S')
	special(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

func permBits(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

func toEntry(name, p string, fi fs.FileInfo) lsEntry {
	e := lsEntry{Name: name, Path: "/" + strings.TrimPrefix(p, "."), Type: fileType(fi.Mode()), Mode: lsMode(fi.Mode()),
		Perm: permBits(fi.Mode()), Nlink: 1, Size: fi.Size(), Mtime: fi.ModTime().UTC()}
	if p == "." {
		e.Path = "/"
	}
	if st, ok := fi.Sys().(*inode.Stat); ok {
		e.Nlink, e.UID, e.GID, e.Alloc, e.Target, e.Ino = max(st.Nlink, 1), st.UID, st.GID, st.Blocks, st.Target, st.Ino
	}
	return e
}

func cmdLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ls", flag.ContinueOnError)
	sel := fl.String("volume", "", "the volume: its number, ID, label, UUID or guest mount point (default: the root filesystem)")
	output := fl.String("output", "human", "output format: human or json")
	recursive := fl.Bool("R", false, "list subdirectories recursively")
	dirOnly := fl.Bool("d", false, "list a directory itself, not its contents")
	var share bool
	forceShareFlags(fl, &share)
	fa, err := parseFileArgs(fl, args, false)
	if err != nil {
		return err
	}
	if len(fa.rest) > 1 {
		return usagef("ls takes one path")
	}
	p := "/"
	if len(fa.rest) == 1 {
		p = fa.rest[0]
	}
	name, err := guestPath(p)
	if err != nil {
		return err
	}
	g, fsys, err := openGuestFS(ctx, fa.images, *sel, share)
	if err != nil {
		return err
	}
	defer g.Close()
	var entries []lsEntry
	var errs []error
	var walk func(dir string) error
	walk = func(dir string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		es, err := fsys.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
		}
		var sub []string
		for _, de := range es {
			child := path.Join(dir, de.Name())
			fi, err := de.Info()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			entries = append(entries, toEntry(de.Name(), child, fi))
			if *recursive && fi.IsDir() {
				sub = append(sub, child)
			}
		}
		for _, s := range sub {
			if err := walk(s); err != nil {
				return err
			}
		}
		return nil
	}
	fi, err := fsys.Lstat(name)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 && !*dirOnly {
		if t, err := fsys.Stat(name); err == nil && t.IsDir() {
			fi = t
		}
	}
	if fi.IsDir() && !*dirOnly {
		if err := walk(name); err != nil {
			return err
		}
	} else {
		entries = append(entries, toEntry(path.Base("/"+name), name, fi))
	}
	if *output == "json" {
		if entries == nil {
			entries = []lsEntry{}
		}
		if err := writeJSON(stdout, entries); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 1, 1, ' ', tabwriter.AlignRight)
		now := time.Now()
		for _, e := range entries {
			ts := e.Mtime.Format("Jan _2 15:04")
			if e.Mtime.Before(now.AddDate(0, -6, 0)) || e.Mtime.After(now.Add(time.Hour)) {
				ts = e.Mtime.Format("Jan _2  2006")
			}
			n := e.Name
			if *recursive {
				n = e.Path
			}
			if e.Target != "" {
				n += " -> " + e.Target
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", e.Mode, e.Nlink, e.UID, e.GID, e.Size, ts, n)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, err := range errs {
		fmt.Fprintf(stderr, "vdisk ls: %v\n", err)
	}
	if len(errs) > 0 {
		return &exitError{code: ExitCode(errs[0]), msg: fmt.Sprintf("%d entries could not be read", len(errs))}
	}
	return nil
}

func cmdCat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("cat", flag.ContinueOnError)
	sel := fl.String("volume", "", "the volume: its number, ID, label, UUID or guest mount point (default: the root filesystem)")
	var share bool
	forceShareFlags(fl, &share)
	fa, err := parseFileArgs(fl, args, false)
	if err != nil {
		return err
	}
	if len(fa.rest) == 0 {
		return usagef("cat takes a path inside the guest")
	}
	g, fsys, err := openGuestFS(ctx, fa.images, *sel, share)
	if err != nil {
		return err
	}
	defer g.Close()
	for _, p := range fa.rest {
		name, err := guestPath(p)
		if err != nil {
			return err
		}
		f, err := fsys.Open(name)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err == nil && fi.IsDir() {
			f.Close()
			return disk.Errorf(disk.ErrInvalid, "%s is a directory", p)
		}
		_, err = io.Copy(stdout, ctxReader{ctx, f})
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func cmdExtract(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("extract", flag.ContinueOnError)
	sel := fl.String("volume", "", "the volume: its number, ID, label, UUID or guest mount point (default: the root filesystem)")
	overwrite := fl.Bool("overwrite", false, "replace files that exist at the destination")
	noOwners := fl.Bool("no-owners", false, "do not restore owners (the default as non-root)")
	noXattrs := fl.Bool("no-xattrs", false, "do not restore extended attributes")
	showProgress := fl.Bool("p", false, "show progress (the default on a terminal)")
	var share bool
	forceShareFlags(fl, &share)
	fa, err := parseFileArgs(fl, args, false)
	if err != nil {
		return err
	}
	if len(fa.rest) < 2 {
		return usagef("extract takes one or more paths inside the guest and a destination")
	}
	dest := fa.rest[len(fa.rest)-1]
	var names []string
	for _, p := range fa.rest[:len(fa.rest)-1] {
		n, err := guestPath(p)
		if err != nil {
			return err
		}
		names = append(names, n)
	}
	g, fsys, err := openGuestFS(ctx, fa.images, *sel, share)
	if err != nil {
		return err
	}
	defer g.Close()
	root := os.Geteuid() == 0
	update, finish := progress(stderr, *showProgress || isTerminal(stderr), "extracting")
	opts := extract.Options{Owners: root && !*noOwners, Xattrs: !*noXattrs, Devices: root, Overwrite: *overwrite}
	if update != nil {
		opts.Progress = func(p extract.Progress) { update(p.Bytes, max(p.TotalBytes, p.Bytes)) }
	}
	start := time.Now()
	sum, err := extract.Extract(ctx, fsys, names, dest, opts)
	finish()
	if err != nil {
		return err
	}
	for _, e := range sum.Errors {
		fmt.Fprintf(stderr, "vdisk extract: %v\n", e)
	}
	fmt.Fprintf(stderr, "extracted %d files, %d directories, %d links (%d hard), %s in %s",
		sum.Files, sum.Dirs, sum.Symlinks+sum.HardLinks, sum.HardLinks, humanSize(sum.Bytes), time.Since(start).Round(time.Millisecond))
	if sum.Skipped > 0 {
		fmt.Fprintf(stderr, "; %d device nodes skipped (not root)", sum.Skipped)
	}
	fmt.Fprintln(stderr)
	if len(sum.Errors) > 0 {
		return &exitError{code: ExitCode(sum.Errors[0]), msg: fmt.Sprintf("%d files could not be extracted", len(sum.Errors))}
	}
	return nil
}

// mountNames gives each readable volume a directory name: its guest
// mount point ("/" is "root", "/var/log" is "var-log"), else its label,
// else its ID; duplicates get "-2", "-3"….
func mountNames(vols []guestVolume) []string {
	names := make([]string, len(vols))
	used := map[string]bool{}
	clean := func(s string) string {
		s = strings.Map(func(r rune) rune {
			if r == '/' || r == 0 || r < ' ' {
				return '-'
			}
			return r
		}, s)
		if s == "." || s == ".." {
			s = "vol"
		}
		return s
	}
	for i, v := range vols {
		var n string
		switch {
		case v.MountPoint == "/":
			n = "root"
		case strings.HasPrefix(v.MountPoint, "/"):
			n = clean(strings.Trim(v.MountPoint, "/"))
		case v.Label != "":
			n = clean(v.Label)
		default:
			n = clean(v.ID)
		}
		if n == "" {
			n = clean(v.ID)
		}
		base := n
		for k := 2; used[n]; k++ {
			n = fmt.Sprintf("%s-%d", base, k)
		}
		used[n] = true
		names[i] = n
	}
	return names
}

func cmdMount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	allowOther := fl.Bool("allow-other", false, "let other users read the mount (their access is checked against each file's mode)")
	sel := fl.String("volume", "", "mount only this volume (its number, ID, label, UUID or mount point)")
	var share bool
	forceShareFlags(fl, &share)
	fa, err := parseFileArgs(fl, args, false)
	if err != nil {
		return err
	}
	if len(fa.rest) != 1 {
		return usagef("mount takes a directory to mount on")
	}
	dir := fa.rest[0]
	g, err := openGuest(ctx, fa.images, share)
	if err != nil {
		return err
	}
	defer g.Close()
	var vols []mount.Volume
	var opened []guestVolume
	if *sel != "" {
		v, err := g.pick(*sel)
		if err != nil {
			return err
		}
		f, err := v.fs()
		if err != nil {
			return err
		}
		vols, opened = []mount.Volume{{FS: f}}, []guestVolume{*v}
	} else {
		for _, v := range g.vols {
			if v.open == nil {
				continue
			}
			f, err := v.fs()
			if err != nil {
				fmt.Fprintf(stderr, "vdisk mount: volume %s not mounted: %v\n", v.ID, err)
				continue
			}
			vols = append(vols, mount.Volume{FS: f})
			opened = append(opened, v)
		}
	}
	if len(vols) == 0 {
		return disk.Errorf(disk.ErrNotSupported, "no volume of %s holds a filesystem vdisk reads", strings.Join(fa.images, ", "))
	}
	for i, n := range mountNames(opened) {
		vols[i].Name = n
	}
	srv, err := mount.Mount(dir, vols, mount.Options{AllowOther: *allowOther, FsName: "vdisk:" + path.Base(fa.images[0])})
	if err != nil {
		return err
	}
	for i, v := range vols {
		fmt.Fprintf(stdout, "%s/%s\t%s %s\n", dir, v.Name, opened[i].ID, opened[i].FSType)
	}
	fmt.Fprintf(stderr, "mounted read-only at %s; Ctrl-C or 'vdisk umount %s' unmounts\n", dir, dir)
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	stop := ctx.Done()
	var retry <-chan time.Time
	for {
		select {
		case <-done:
			return nil
		case <-stop:
		case <-retry:
		}
		stop = nil
		err := srv.Unmount()
		if err == nil {
			<-done
			return nil
		}
		if !errors.Is(err, disk.ErrBusy) {
			return err
		}
		if retry == nil {
			fmt.Fprintf(stderr, "vdisk mount: %s is busy (a file is open or a shell is inside it); retrying every second\n", dir)
		}
		retry = time.After(time.Second)
	}
}

// fuseMounts lists the mount points of vdisk's FUSE mounts.
func fuseMounts() map[string]bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	m := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		_, after, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(l), strings.Fields(after)
		if ok && len(f) > 4 && len(g) > 0 && g[0] == "fuse.vdisk" {
			m[unescapeMount(f[4])] = true
		}
	}
	return m
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func cmdUmount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("umount", flag.ContinueOnError)
	pos, err := parse(fl, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("umount takes the directory of a 'vdisk mount'")
	}
	dir, err := realDir(pos[0])
	if err != nil {
		return err
	}
	if !fuseMounts()[dir] {
		return disk.Errorf(disk.ErrNotFound, "%s is not a vdisk mount", pos[0])
	}
	err = unix.Unmount(dir, 0)
	if errors.Is(err, unix.EPERM) {
		out, ferr := exec.CommandContext(ctx, "fusermount3", "-u", dir).CombinedOutput()
		if ferr != nil {
			return disk.Errorf(disk.ErrPermission, "umount %s: %s", dir, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if errors.Is(err, unix.EBUSY) {
		return disk.Errorf(disk.ErrBusy, "%s is busy: a file is open or a process has its directory inside it", dir)
	}
	if err != nil {
		return disk.Wrap(err, "umount", dir, -1)
	}
	return nil
}

func realDir(p string) (string, error) {
	abs, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if !path.IsAbs(p) {
		p = path.Join(abs, p)
	}
	return path.Clean(p), nil
}
