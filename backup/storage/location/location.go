// Package location opens the Storage a repository location names: a
// directory path (package local) or "s3://BUCKET[/PREFIX]" (package s3,
// configured from the AWS environment variables), wrapped in package
// retry. This is what the CLI calls. For S3 it reads the AWS environment
// variables through [s3.ConfigFromEnv]; nothing else in the storage
// packages looks at the environment.
package location

import (
	"context"
	"errors"
	"strings"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/retry"
	"github.com/vdisk-project/vdisk/backup/storage/s3"
	"github.com/vdisk-project/vdisk/disk"
)

// Options tune Open and Create. The zero value gives the defaults.
type Options struct {
	// Endpoint is the S3 endpoint given on the command line; it
	// overrides AWS_ENDPOINT_URL. Ignored for a directory.
	Endpoint string
	// CAFile names extra CA certificates (PEM) to trust for S3.
	CAFile string
	// Retry tunes the retries of transient failures (package retry).
	Retry retry.Options
	// CreateBucket lets Create make a missing S3 bucket.
	CreateBucket bool
}

// IsS3 reports whether loc names an S3 location.
func IsS3(loc string) bool { return strings.HasPrefix(loc, "s3://") }

func parse(loc string) error {
	if loc == "" {
		return &disk.Error{Op: "location", Off: -1, Code: disk.ErrInvalid, Err: errors.New("location: empty repository location")}
	}
	if i := strings.Index(loc, "://"); i > 0 && !IsS3(loc) {
		return &disk.Error{Op: "location", Path: loc, Off: -1, Code: disk.ErrNotSupported,
			Err: errors.New("location: unknown scheme " + loc[:i] + "://; want a directory or s3://BUCKET[/PREFIX]")}
	}
	return nil
}

func s3Config(loc string, opts *Options) (s3.Config, error) {
	cfg, err := s3.ConfigFromEnv(loc, opts.Endpoint)
	if err != nil {
		return s3.Config{}, err
	}
	cfg.CAFile = opts.CAFile
	return cfg, nil
}

// Open opens the repository storage at loc, which must exist: a directory
// (disk.ErrNotFound if it does not) or an S3 bucket (disk.ErrNotFound
// naming it if it does not; disk.ErrPermission if the credentials are
// refused). A location with another scheme gives disk.ErrNotSupported.
func Open(ctx context.Context, loc string, opts Options) (storage.Storage, error) {
	if err := parse(loc); err != nil {
		return nil, err
	}
	var st storage.Storage
	if IsS3(loc) {
		cfg, err := s3Config(loc, &opts)
		if err != nil {
			return nil, err
		}
		s, err := s3.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		st = s
	} else {
		s, err := openLocal(loc)
		if err != nil {
			return nil, err
		}
		st = s
	}
	return retry.New(st, opts.Retry), nil
}

// Create makes the storage for a new repository at loc and opens it: the
// directory (with its parents), or for S3 the bucket if it is missing and
// opts.CreateBucket allows.
func Create(ctx context.Context, loc string, opts Options) (storage.Storage, error) {
	if err := parse(loc); err != nil {
		return nil, err
	}
	if !IsS3(loc) {
		s, err := createLocal(loc)
		if err != nil {
			return nil, err
		}
		return retry.New(s, opts.Retry), nil
	}
	cfg, err := s3Config(loc, &opts)
	if err != nil {
		return nil, err
	}
	s, err := s3.Open(ctx, cfg)
	if errors.Is(err, disk.ErrNotFound) && opts.CreateBucket {
		if err := s3.CreateBucket(ctx, cfg); err != nil {
			return nil, err
		}
		s, err = s3.Open(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	return retry.New(s, opts.Retry), nil
}
