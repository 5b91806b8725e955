// Command backup is the vdisk counterpart of VDDK's sample backup program,
// written on vdisk's backup engine: an incremental-forever backup of a VM's
// disks (or of one host disk, or of a local image file) into a
// deduplicated, compressed, encrypted repository in a directory or on S3.
//
//	backup -server HOST:PORT -thumbprint TP -user U -vm NAME -repo DIR
//	backup -server HOST:PORT -thumbprint TP -user U -disk NAME -repo DIR
//	backup -file IMAGE -repo DIR
//
// The host password comes from $VDISK_PASSWORD, the repository's from
// $VDISK_REPO_PASSWORD (a repository that does not exist yet is created).
// For a host it runs the canonical sequence through package backup/source:
// connect, PrepareForAccess, a temporary snapshot, then for each disk the
// areas changed since the change ID the previous point stored (an
// incremental) or, the first time or when the host refuses that change ID,
// every allocated area; then the snapshot is removed and the access ended.
// Every point is a synthetic full: `vdisk restore`, `vdisk export point:…`
// or backup.Repository.OpenDisk read it directly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/backup/source"
	"github.com/vdisk-project/vdisk/backup/storage/location"
	"github.com/vdisk-project/vdisk/disk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "backup:", vdisk.ErrorText(err))
		os.Exit(1)
	}
}

type options struct {
	server, thumbprint, user, password string
	vm, disk, file, repo, transports   string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.StringVar(&o.server, "server", "", "host control API address (host:port)")
	fs.StringVar(&o.thumbprint, "thumbprint", "", "SHA-256 thumbprint of the host certificate")
	fs.StringVar(&o.user, "user", "", "user name (password from $VDISK_PASSWORD)")
	fs.StringVar(&o.vm, "vm", "", "back up every disk of this VM")
	fs.StringVar(&o.disk, "disk", "", "back up this host disk")
	fs.StringVar(&o.file, "file", "", "back up this local image file")
	fs.StringVar(&o.repo, "repo", "", "repository: a directory or s3://BUCKET/PREFIX")
	fs.StringVar(&o.transports, "transports", "", "transport modes to try, colon-separated (default direct:nbdssl)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.password = os.Getenv("VDISK_PASSWORD")
	spec := ""
	switch {
	case o.vm != "" && o.disk == "" && o.file == "":
		spec = "vdisk:vm/" + o.vm
	case o.disk != "" && o.vm == "" && o.file == "":
		spec = "vdisk:disk/" + o.disk
	case o.file != "" && o.vm == "" && o.disk == "":
		spec = o.file
	}
	if o.repo == "" || spec == "" {
		return fmt.Errorf("give -repo and one of -vm, -disk or -file")
	}

	// The repository: opened, or made the first time.
	repo, err := openRepo(ctx, o.repo, []byte(os.Getenv("VDISK_REPO_PASSWORD")))
	if err != nil {
		return err
	}
	defer repo.Close()

	var c *vdisk.Conn
	if o.file == "" {
		c, err = vdisk.Connect(ctx, vdisk.ConnectParams{Server: o.server, Thumbprint: o.thumbprint,
			User: o.user, Password: o.password, Transports: o.transports})
		if err != nil {
			return err
		}
		defer func() {
			// The session this program logged in with ends with it (its
			// tickets and leases too), rather than waiting to expire.
			lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c.Logout(lctx)
			cancel()
			c.Close()
		}()
	}

	// The previous point of this source is the parent of an incremental;
	// its change IDs are where the host's changed areas start.
	label := source.Label(spec)
	points, err := repo.Points(ctx)
	if err != nil {
		return err
	}
	var parent *backup.Point
	for _, p := range points {
		if p.Source == label && (parent == nil || p.Time.After(parent.Time)) {
			parent = p
		}
	}
	so := source.Options{Conn: c, Incremental: parent != nil, Identity: "example backup"}
	if parent != nil {
		so.Prev = map[string]string{}
		for _, d := range parent.Disks {
			so.Prev[d.Name] = d.ChangeID
		}
	}

	// Freeze the source: access lease, temporary snapshot, changed areas.
	src, err := source.Open(ctx, spec, so)
	if err != nil {
		return err
	}
	defer src.Close(ctx)
	opts := backup.BackupOptions{Source: label, Config: src.Config, Parent: parent}
	for _, d := range src.Disks {
		sd := backup.SourceDisk{Name: d.Name, Disk: d.Disk, ChangeID: d.ChangeID}
		if parent != nil && parent.Disk(d.Name) != nil {
			sd.Changed = d.Changed // nil: read every allocated area
		}
		opts.Disks = append(opts.Disks, sd)
	}
	p, sum, err := repo.Backup(ctx, opts)
	if err != nil {
		return err
	}
	if err := src.Close(ctx); err != nil {
		return err
	}
	kind := "full"
	if parent != nil {
		kind = "incremental"
	}
	for _, d := range src.Disks {
		mode := "file"
		if h, ok := d.Disk.(*vdisk.Handle); ok {
			mode = h.TransportMode()
		}
		fmt.Fprintf(out, "%s: %s backup over %s\n", d.Name, kind, mode)
	}
	fmt.Fprintf(out, "point %s: read %d bytes, %d new, %d unchanged\n", p.ID, sum.BytesRead, sum.BytesNew, sum.BytesUnchanged)
	return nil
}

func openRepo(ctx context.Context, loc string, password []byte) (*backup.Repository, error) {
	st, err := location.Open(ctx, loc, location.Options{})
	if errors.Is(err, disk.ErrNotFound) {
		st, err = location.Create(ctx, loc, location.Options{CreateBucket: true})
	}
	if err != nil {
		return nil, err
	}
	repo, err := backup.Open(ctx, st, password)
	if errors.Is(err, disk.ErrNotFound) {
		repo, err = backup.Init(ctx, st, backup.InitOptions{Password: password})
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	return repo, nil
}
