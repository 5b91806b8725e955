// Package s3 is a Storage in a bucket of an S3-compatible object store:
// Amazon S3, MinIO, versitygw, Ceph RGW, Wasabi and the like.
//
// # Configuration
//
// [Config] names the bucket, an optional key prefix, the endpoint and the
// credentials; [ConfigFromEnv] builds one from a location
// "s3://BUCKET[/PREFIX]" and the standard AWS environment variables.
// [Open] checks that the bucket exists and that the credentials are
// accepted; [CreateBucket] makes the bucket, for repository init.
//
// An object named "data/3f/3f9a…" is the key PREFIX/data/3f/3f9a…. Keys
// under the prefix that are not valid object names (directory markers,
// foreign files) are not listed.
//
// # Writes
//
// Put sends an object of up to [Config.PartSize] bytes (default 64 MiB) in
// one PUT and a larger one as a multipart upload of parts of that size. A
// Content-MD5 header goes with each PUT or part so that the server refuses
// what arrives damaged. S3 makes an object visible only once it is
// complete, which gives Put its all-or-nothing promise.
//
// # Errors
//
// A missing key (NoSuchKey, 404) is disk.ErrNotFound; a missing bucket is
// disk.ErrNotFound naming the bucket. Refused credentials or access (403,
// AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, an expired
// token) are disk.ErrPermission. A server failure (5xx, SlowDown,
// RequestTimeout), a refused, reset or timed-out connection and a body cut
// short are disk.ErrAccess marked [storage.Transient], for a retry wrapper
// to retry; a TLS certificate the client does not trust is disk.ErrAccess
// and not transient. The client's own retries are bounded by
// [Config.MaxRetries] (default 2 tries per request, enough to follow a
// region redirect); retry with backoff belongs to package retry.
//
// # Consistency
//
// The package assumes what Amazon S3 has promised since December 2020 and
// current MinIO, Ceph and versitygw provide: strong read-after-write
// consistency for PUTs, DELETEs and listings.
package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// BucketLookup says how requests name the bucket.
type BucketLookup int

const (
	// LookupAuto uses virtual-hosted style where the endpoint is known
	// to support it (Amazon S3 and a few clouds) and path style
	// elsewhere.
	LookupAuto BucketLookup = iota
	// LookupPath puts the bucket in the path: https://host/bucket/key.
	LookupPath
	// LookupVirtual puts the bucket in the host name:
	// https://bucket.host/key.
	LookupVirtual
)

// Defaults of Config.
const (
	DefaultPartSize = 64 << 20
	// MinPartSize is the smallest part S3 accepts in a multipart upload.
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part S3 accepts.
	MaxPartSize       = 5 << 30
	DefaultMaxRetries = 2
	defaultEndpoint   = "https://s3.amazonaws.com"
)

// Config says where a repository's bucket is and how to reach it.
type Config struct {
	// Bucket is the bucket's name. Required.
	Bucket string
	// Prefix, if not empty, is a valid object name (see
	// storage.ValidName) under which all keys go: "PREFIX/name".
	Prefix string
	// Endpoint is the server's URL, "https://host[:port]"; plain
	// "http://" is accepted for a loopback host only, unless AllowHTTP.
	// Empty means Amazon S3.
	Endpoint string
	// AllowHTTP permits plain HTTP to a host that is not loopback.
	// Credentials are signed, not sent, but the data travels in clear.
	AllowHTTP bool
	// Region is the bucket's region; empty lets the client find out
	// (Amazon) or use us-east-1.
	Region string
	// AccessKey, SecretKey and SessionToken are the credentials. Empty
	// keys mean anonymous requests.
	AccessKey, SecretKey, SessionToken string
	// Lookup chooses between path and virtual-hosted style requests.
	Lookup BucketLookup
	// CAFile names a PEM file of certificates to trust in addition to
	// the system's, for a server with a private CA.
	CAFile string
	// TLSConfig, if set, is the base TLS configuration (cloned).
	TLSConfig *tls.Config
	// PartSize is the largest object sent in one PUT and the part size
	// of larger ones, between MinPartSize and MaxPartSize; default
	// DefaultPartSize.
	PartSize int64
	// MaxRetries is the number of tries the S3 client makes per request
	// before it returns an error; default DefaultMaxRetries.
	MaxRetries int
	// Transport, if set, carries the requests instead of a transport
	// built from CAFile and TLSConfig (for tests and proxies).
	Transport http.RoundTripper
}

// EnsureDefaults fills in the zero fields that have defaults.
func (c *Config) EnsureDefaults() {
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = DefaultMaxRetries
	}
}

// Validate checks the configuration; it does not contact the server.
func (c *Config) Validate() error {
	inval := func(format string, args ...any) error {
		return &disk.Error{Op: "s3: config", Path: c.Bucket, Off: -1, Code: disk.ErrInvalid, Err: fmt.Errorf("s3: "+format, args...)}
	}
	if !validBucket(c.Bucket) {
		return inval("invalid bucket name %q", c.Bucket)
	}
	if c.Prefix != "" && !storage.ValidName(c.Prefix) {
		return inval("invalid key prefix %q", c.Prefix)
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
		return inval("part size %d outside [%d, %d]", c.PartSize, MinPartSize, MaxPartSize)
	}
	if _, _, err := c.endpoint(); err != nil {
		return inval("%w", err)
	}
	return nil
}

// validBucket checks the rules every S3 implementation shares: 3 to 63
// lowercase letters, digits, '.' and '-', starting and ending with a letter
// or digit.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && (c != '.' && c != '-' || i == 0 || i == len(b)-1) {
			return false
		}
	}
	return true
}

// endpoint returns the host[:port] and whether to use TLS.
func (c *Config) endpoint() (string, bool, error) {
	e := c.Endpoint
	if e == "" {
		e = defaultEndpoint
	}
	if !strings.Contains(e, "://") {
		e = "https://" + e
	}
	u, err := url.Parse(e)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", c.Endpoint, err)
	}
	if u.Host == "" || u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("endpoint %q: want https://host[:port]", c.Endpoint)
	}
	switch u.Scheme {
	case "https":
		return u.Host, true, nil
	case "http":
		if !c.AllowHTTP && !loopback(u.Hostname()) {
			return "", false, fmt.Errorf("endpoint %q: plain http is allowed for a loopback host only", c.Endpoint)
		}
		return u.Host, false, nil
	}
	return "", false, fmt.Errorf("endpoint %q: scheme %q, want https", c.Endpoint, u.Scheme)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ConfigFromEnv builds a Config from a location "s3://BUCKET[/PREFIX]"
// and the environment: the endpoint from endpointFlag, else
// AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL; the region from AWS_REGION or
// AWS_DEFAULT_REGION; the credentials from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or else from the profile
// AWS_PROFILE (default "default") of the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials), which may
// name a credential_process to run.
func ConfigFromEnv(location, endpointFlag string) (Config, error) {
	rest, ok := strings.CutPrefix(location, "s3://")
	if !ok {
		return Config{}, &disk.Error{Op: "s3: config", Path: location, Off: -1, Code: disk.ErrInvalid, Err: errors.New("s3: location must be s3://BUCKET[/PREFIX]")}
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	c := Config{
		Bucket:       bucket,
		Prefix:       strings.Trim(prefix, "/"),
		Endpoint:     endpointFlag,
		Region:       os.Getenv("AWS_REGION"),
		AccessKey:    os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: os.Getenv("AWS_SESSION_TOKEN"),
	}
	if c.Endpoint == "" {
		c.Endpoint = os.Getenv("AWS_ENDPOINT_URL_S3")
	}
	if c.Endpoint == "" {
		c.Endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	if c.Region == "" {
		c.Region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if c.AccessKey == "" {
		if v, err := credentials.NewFileAWSCredentials("", "").GetWithContext(&credentials.CredContext{Client: http.DefaultClient}); err == nil && v.AccessKeyID != "" {
			c.AccessKey, c.SecretKey, c.SessionToken = v.AccessKeyID, v.SecretAccessKey, v.SessionToken
		} else if os.Getenv("AWS_PROFILE") != "" {
			return Config{}, &disk.Error{Op: "s3: config", Path: location, Off: -1, Code: disk.ErrPermission,
				Err: fmt.Errorf("s3: no credentials for AWS_PROFILE %q in the shared credentials file: %w", os.Getenv("AWS_PROFILE"), err)}
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Storage is a bucket, or the part of it under a prefix. It is safe for
// concurrent use.
type Storage struct {
	client    *minio.Client
	core      minio.Core
	transport http.RoundTripper
	bucket    string
	prefix    string // "" or ending in '/'
	partSize  int64
}

var _ storage.Storage = (*Storage)(nil)

func newClient(cfg *Config) (*minio.Client, http.RoundTripper, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	host, secure, _ := cfg.endpoint()
	tr := cfg.Transport
	if tr == nil {
		var err error
		if tr, err = transport(cfg); err != nil {
			return nil, nil, err
		}
	}
	lookup := minio.BucketLookupAuto
	switch cfg.Lookup {
	case LookupPath:
		lookup = minio.BucketLookupPath
	case LookupVirtual:
		lookup = minio.BucketLookupDNS
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.New(&credentials.Static{}) // anonymous
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   cfg.MaxRetries,
	})
	if err != nil {
		return nil, nil, &disk.Error{Op: "s3: open", Path: cfg.Bucket, Off: -1, Code: disk.ErrInvalid, Err: err}
	}
	return c, tr, nil
}

func transport(cfg *Config) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 2 * time.Minute
	t.MaxIdleConnsPerHost = 64
	// Bodies are binary and mostly incompressible; a transparent gzip
	// would also hide the Content-Length that Get checks.
	t.DisableCompression = true
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, &disk.Error{Op: "s3: open", Path: cfg.CAFile, Off: -1, Code: disk.CodeOf(err), Err: err}
		}
		pool := tc.RootCAs
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil {
				pool = x509.NewCertPool()
			}
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &disk.Error{Op: "s3: open", Path: cfg.CAFile, Off: -1, Code: disk.ErrInvalid, Err: errors.New("s3: no PEM certificate in the CA file")}
		}
		tc.RootCAs = pool
	}
	t.TLSClientConfig = tc
	return t, nil
}

// Open returns the Storage of cfg after checking, with one request, that
// the bucket exists (disk.ErrNotFound naming it otherwise) and that the
// credentials are accepted.
func Open(ctx context.Context, cfg Config) (*Storage, error) {
	c, tr, err := newClient(&cfg)
	if err != nil {
		return nil, err
	}
	s := &Storage{client: c, core: minio.Core{Client: c}, transport: tr, bucket: cfg.Bucket, partSize: cfg.PartSize}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.fail(ctx, "open", "", err)
	}
	if !ok {
		return nil, s.noBucket("open")
	}
	return s, nil
}

// CreateBucket makes cfg's bucket, in cfg.Region when set. A bucket that
// exists already and is accessible is not an error.
func CreateBucket(ctx context.Context, cfg Config) error {
	c, tr, err := newClient(&cfg)
	if err != nil {
		return err
	}
	s := &Storage{client: c, transport: tr, bucket: cfg.Bucket}
	defer s.Close()
	err = c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
	if err == nil {
		return nil
	}
	switch minio.ToErrorResponse(errorResponse(err)).Code {
	case "BucketAlreadyOwnedByYou":
		return nil
	case "BucketAlreadyExists":
		if ok, e := c.BucketExists(ctx, cfg.Bucket); e == nil && ok {
			return nil
		}
		return &disk.Error{Op: "s3: create bucket", Path: cfg.Bucket, Off: -1, Code: disk.ErrPermission,
			Err: fmt.Errorf("s3: the bucket exists and belongs to someone else: %w", err)}
	}
	return s.fail(ctx, "create bucket", "", err)
}

func (s *Storage) key(name string) string { return s.prefix + name }

func (s *Storage) String() string {
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

func check(op, name string) error {
	if !storage.ValidName(name) {
		return &disk.Error{Op: "s3: " + op, Path: name, Off: -1, Code: disk.ErrInvalid, Err: errors.New("s3: invalid object name")}
	}
	return nil
}

// Put implements [storage.Storage].
func (s *Storage) Put(ctx context.Context, name string, data []byte) error {
	if err := check("put", name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.key(name), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:    "application/octet-stream",
		PartSize:       uint64(s.partSize),
		SendContentMd5: true,
	})
	if err != nil {
		return s.fail(ctx, "put", name, err)
	}
	return nil
}

// ReadAt implements [storage.Storage] with one ranged GET. The server's
// Content-Range is checked, so that a server ignoring the range cannot pass
// off other bytes.
func (s *Storage) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := check("read", name); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &disk.Error{Op: "s3: read", Path: name, Off: off, Code: disk.ErrInvalid, Err: errors.New("s3: negative offset")}
	}
	pastEnd := func(n int) error {
		return &disk.Error{Op: "s3: read", Path: name, Off: off, Code: disk.ErrAccess,
			Err: fmt.Errorf("s3: %d of %d bytes before the end: %w", n, len(p), io.ErrUnexpectedEOF)}
	}
	if len(p) == 0 {
		// A range cannot be empty: ask for the size.
		in, err := s.Stat(ctx, name)
		if err != nil {
			return 0, err
		}
		if off > in.Size {
			return 0, pastEnd(0)
		}
		return 0, nil
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+int64(len(p))-1); err != nil {
		return 0, &disk.Error{Op: "s3: read", Path: name, Off: off, Code: disk.ErrInvalid, Err: err}
	}
	body, info, hdr, err := s.core.GetObject(ctx, s.bucket, s.key(name), opts)
	if err != nil {
		if r := minio.ToErrorResponse(errorResponse(err)); r.Code == "InvalidRange" || r.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			return 0, pastEnd(0)
		}
		e := s.fail(ctx, "read", name, err).(*disk.Error)
		e.Off = off
		return 0, e
	}
	defer body.Close()
	bad := func(format string, args ...any) (int, error) {
		return 0, &disk.Error{Op: "s3: read", Path: name, Off: off, Code: disk.ErrAccess, Err: fmt.Errorf("s3: "+format, args...)}
	}
	var want int64
	if cr := hdr.Get("Content-Range"); cr != "" {
		start, end, ok := parseContentRange(cr)
		if !ok || start != off || end < start || end-start+1 > int64(len(p)) {
			return bad("the server answered a range of %d bytes at %d with Content-Range %q", len(p), off, cr)
		}
		want = end - start + 1
	} else {
		// The whole object came: acceptable only from offset 0.
		if off != 0 || info.Size < 0 {
			return bad("the server ignored the range of %d bytes at %d", len(p), off)
		}
		if info.Size > int64(len(p)) {
			return bad("the server ignored the range of %d bytes at %d and sent %d", len(p), off, info.Size)
		}
		want = info.Size
	}
	if info.Size >= 0 && info.Size != want {
		return bad("Content-Length %d does not match Content-Range's %d bytes", info.Size, want)
	}
	n, err := io.ReadFull(body, p[:want])
	if err != nil {
		return n, s.cut(ctx, "read", name, off, n, want, err)
	}
	if want < int64(len(p)) {
		return n, pastEnd(n)
	}
	return n, nil
}

// cut reports a body that ended or failed before its length: transient,
// and not io.ErrUnexpectedEOF, which means a read past the end.
func (s *Storage) cut(ctx context.Context, op, name string, off int64, n int, want int64, err error) error {
	if ctx.Err() != nil {
		return &disk.Error{Op: "s3: " + op, Path: name, Off: off, Code: disk.ErrAccess, Err: ctx.Err()}
	}
	msg := fmt.Sprintf("s3: the response broke off after %d of %d bytes", n, want)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = errors.New(msg)
	} else {
		err = fmt.Errorf("%s: %w", msg, err)
	}
	return storage.Transient(&disk.Error{Op: "s3: " + op, Path: name, Off: off, Code: disk.ErrAccess, Err: err})
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*").
func parseContentRange(v string) (start, end int64, ok bool) {
	v, ok = strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, false
	}
	r, _, ok := strings.Cut(v, "/")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	return start, end, err1 == nil && err2 == nil && start >= 0
}

// Get implements [storage.Storage]. The response's Content-Length is
// checked against max before the body is read.
func (s *Storage) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := check("get", name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	body, info, _, err := s.core.GetObject(ctx, s.bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail(ctx, "get", name, err)
	}
	defer body.Close()
	tooBig := func(size string) error {
		return &disk.Error{Op: "s3: get", Path: name, Off: -1, Code: disk.ErrOutOfMemory,
			Err: fmt.Errorf("s3: object of %s bytes exceeds the limit of %d", size, max)}
	}
	if info.Size > max {
		return nil, tooBig(strconv.FormatInt(info.Size, 10))
	}
	if info.Size < 0 {
		// No length given: read at most max+1 bytes.
		var buf bytes.Buffer
		n, err := io.Copy(&buf, io.LimitReader(body, max+1))
		if err != nil {
			return nil, s.cut(ctx, "get", name, -1, int(n), -1, err)
		}
		if n > max {
			return nil, tooBig("more than " + strconv.FormatInt(max, 10))
		}
		return buf.Bytes(), nil
	}
	b := make([]byte, info.Size)
	if n, err := io.ReadFull(body, b); err != nil {
		return nil, s.cut(ctx, "get", name, -1, n, info.Size, err)
	}
	return b, nil
}

// Stat implements [storage.Storage] with a HEAD request.
func (s *Storage) Stat(ctx context.Context, name string) (storage.Info, error) {
	if err := check("stat", name); err != nil {
		return storage.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return storage.Info{}, s.fail(ctx, "stat", name, err)
	}
	return storage.Info{Name: name, Size: info.Size, ModTime: info.LastModified}, nil
}

// List implements [storage.Storage] with ListObjectsV2, page after page.
func (s *Storage) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	query, ok := listPrefix(prefix)
	if !ok {
		return nil // no valid name starts with prefix
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.client.ListObjectsIter(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.key(query), Recursive: true}) {
		if obj.Err != nil {
			return s.fail(ctx, "list", prefix, obj.Err)
		}
		name, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || !strings.HasPrefix(name, prefix) || !storage.ValidName(name) {
			continue
		}
		if err := fn(storage.Info{Name: name, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// listPrefix returns the prefix to send for a listing of the names that
// start with prefix, and false if no valid name does. Servers refuse a
// prefix with a "." or ".." element, which a valid name cannot have as a
// whole element but may start its last one with ("a/..b"): then the
// listing asks for the directory and filters.
func listPrefix(prefix string) (string, bool) {
	if len(prefix) > storage.MaxNameLen {
		return "", false
	}
	elems := strings.Split(prefix, "/")
	for i, e := range elems {
		last := i == len(elems)-1
		if !last && (e == "" || e == "." || e == "..") {
			return "", false
		}
		if e != "" && !storage.ValidName(e) && !(last && (e == "." || e == "..")) {
			return "", false
		}
	}
	if last := elems[len(elems)-1]; last == "." || last == ".." {
		return prefix[:len(prefix)-len(last)], true
	}
	return prefix, true
}

// Delete implements [storage.Storage]. S3 answers a delete of a missing
// key with success too.
func (s *Storage) Delete(ctx context.Context, name string) error {
	if err := check("delete", name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(errorResponse(err)).Code == "NoSuchKey" {
			return nil
		}
		return s.fail(ctx, "delete", name, err)
	}
	return nil
}

// Close implements [storage.Storage]: it closes idle connections.
func (s *Storage) Close() error {
	if t, ok := s.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// errorResponse returns the minio.ErrorResponse in err's chain, or err.
func errorResponse(err error) error {
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r
	}
	return err
}

func (s *Storage) noBucket(op string) error {
	return &disk.Error{Op: "s3: " + op, Path: s.bucket, Off: -1, Code: disk.ErrNotFound,
		Err: fmt.Errorf("s3: bucket %q does not exist", s.bucket)}
}

// fail classifies an error of the S3 client (see the package doc).
func (s *Storage) fail(ctx context.Context, op, name string, err error) error {
	e := &disk.Error{Op: "s3: " + op, Path: name, Off: -1, Code: disk.ErrAccess, Err: err}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			e.Err = fmt.Errorf("%w: %w", cerr, err)
		}
		return e
	}
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		switch {
		case r.Code == "NoSuchBucket":
			return s.noBucket(op)
		case r.Code == "NoSuchKey" || r.Code == "NotFound" || r.StatusCode == http.StatusNotFound:
			e.Code = disk.ErrNotFound
		case r.Code == "AccessDenied" || r.Code == "InvalidAccessKeyId" || r.Code == "SignatureDoesNotMatch" ||
			r.Code == "ExpiredToken" || r.Code == "InvalidToken" || r.Code == "TokenRefreshRequired" ||
			r.Code == "AccountProblem" || r.Code == "AllAccessDisabled" ||
			r.StatusCode == http.StatusForbidden || r.StatusCode == http.StatusUnauthorized:
			e.Code = disk.ErrPermission
			e.Err = fmt.Errorf("s3: the server refused the credentials or the access to bucket %q "+
				"(check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and the bucket policy): %w", s.bucket, err)
		case r.Code == "SlowDown" || r.Code == "RequestTimeout" || r.Code == "InternalError" ||
			r.Code == "ServiceUnavailable" || r.Code == "BadDigest" || r.Code == "IncompleteBody" ||
			r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests || r.StatusCode == http.StatusRequestTimeout:
			return storage.Transient(e)
		case r.Code == "EntityTooLarge" || r.Code == "InvalidArgument" || r.Code == "KeyTooLongError" ||
			r.Code == "InvalidBucketName" || r.Code == "XMinioInvalidObjectName":
			e.Code = disk.ErrInvalid
		}
		return e
	}
	// Not an answer of the server: the request did not get through.
	var (
		unknownCA   x509.UnknownAuthorityError
		invalidCert x509.CertificateInvalidError
		hostname    x509.HostnameError
		verify      *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &invalidCert) || errors.As(err, &hostname) || errors.As(err, &verify) {
		e.Err = fmt.Errorf("s3: the server's TLS certificate is not trusted (a private CA needs CAFile): %w", err)
		return e
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) {
		return storage.Transient(e)
	}
	return e
}
