//go:build unix

package location_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage/local"
	"github.com/vdisk-project/vdisk/backup/storage/location"
	"github.com/vdisk-project/vdisk/backup/storage/retry"
	"github.com/vdisk-project/vdisk/backup/storage/s3"
	"github.com/vdisk-project/vdisk/backup/storage/storagetest"
	"github.com/vdisk-project/vdisk/disk"
)

func TestDirectory(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repos", "one")
	if _, err := location.Open(ctx, dir, location.Options{}); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("Open of a missing directory: error %v, want disk.ErrNotFound", err)
	}
	st, err := location.Create(ctx, dir, location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "config", []byte("c")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = location.Open(ctx, dir, location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, ok := st.(*retry.Storage)
	if !ok {
		t.Fatalf("Open returned %T, want a *retry.Storage", st)
	}
	if _, ok := r.Unwrap().(*local.Storage); !ok {
		t.Errorf("Open of a directory wraps %T, want *local.Storage", r.Unwrap())
	}
	if b, err := st.Get(ctx, "config", 10); err != nil || string(b) != "c" {
		t.Errorf("Get(config) = %q, %v", b, err)
	}
}

func TestBadLocations(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		loc  string
		want disk.Code
	}{
		{"", disk.ErrInvalid},
		{"ftp://host/dir", disk.ErrNotSupported},
		{"gs://bucket", disk.ErrNotSupported},
		{"s3://", disk.ErrInvalid},
		{"s3://Bad_Bucket", disk.ErrInvalid},
	} {
		if _, err := location.Open(ctx, c.loc, location.Options{}); disk.CodeOf(err) != c.want {
			t.Errorf("Open(%q): error %v, want %v", c.loc, err, c.want)
		}
		if _, err := location.Create(ctx, c.loc, location.Options{}); disk.CodeOf(err) != c.want {
			t.Errorf("Create(%q): error %v, want %v", c.loc, err, c.want)
		}
	}
}

func TestS3(t *testing.T) {
	srv := storagetest.Versitygw(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1") // overridden by the option
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	opts := location.Options{Endpoint: srv.Endpoint}
	ctx := context.Background()
	const loc = "s3://newbucket/repo"
	if _, err := location.Open(ctx, loc, opts); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("Open of a missing bucket: error %v, want disk.ErrNotFound", err)
	}
	if _, err := location.Create(ctx, loc, opts); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("Create of a missing bucket without CreateBucket: error %v, want disk.ErrNotFound", err)
	}
	opts.CreateBucket = true
	st, err := location.Create(ctx, loc, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "config", []byte("c")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	opts.CreateBucket = false
	st, err = location.Open(ctx, loc, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, ok := st.(*retry.Storage).Unwrap().(*s3.Storage); !ok {
		t.Errorf("Open(%s) wraps %T, want *s3.Storage", loc, st.(*retry.Storage).Unwrap())
	}
	if b, err := st.Get(ctx, "config", 10); err != nil || string(b) != "c" {
		t.Errorf("Get(config) = %q, %v", b, err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if _, err := location.Open(ctx, loc, opts); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("Open with a wrong secret: error %v, want disk.ErrPermission", err)
	}
}
