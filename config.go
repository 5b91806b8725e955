package vdisk

import (
	"os"
	"strconv"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/conffile"
)

// Config holds the kit's tunables (VixDiskLib_InitEx's configFile). The
// zero value of a field means its default.
type Config struct {
	// TempDir is where the kit may put temporary files; default
	// os.TempDir(). Key: tmp_directory.
	TempDir string
	// Transports is the default mode list; see ConnectParams.Transports.
	// Key: transports.
	Transports string
	// Timeout bounds every network call, NBD requests included; default
	// 60 s. Key: timeout (a Go duration such as 90s).
	Timeout time.Duration
	// Retries is how often a transient failure (busy host, dropped
	// connection) is retried with backoff before it is reported; default
	// 5. Key: retries.
	Retries int
	// NBDConnections is the NBD connections per handle (multi-conn);
	// default 4. Key: nbd_connections.
	NBDConnections int
	// NBDInFlight bounds NBD requests in flight per connection; default
	// 64. Key: nbd_in_flight.
	NBDInFlight int
	// AsyncWorkers bounds concurrent asynchronous requests on local and
	// direct handles; default 16. Key: async_workers.
	AsyncWorkers int
	// LogLevel is read by the CLI (debug, info, warn, error); the library
	// logs only through ConnectParams.Logger. Key: log_level.
	LogLevel string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Retries <= 0 {
		c.Retries = 5
	}
	if c.NBDConnections <= 0 {
		c.NBDConnections = 4
	}
	if c.NBDInFlight <= 0 {
		c.NBDInFlight = 64
	}
	if c.AsyncWorkers <= 0 {
		c.AsyncWorkers = 16
	}
	return c
}

// LoadConfig reads a config file: one "key = value" per line, '#'
// comments, values optionally in double quotes (VixDiskLib's format). The
// keys are listed on Config's fields; an unknown key is ErrInvalid.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, disk.Wrap(err, "vdisk: read config", path, -1)
	}
	pairs, err := conffile.Parse(b, path)
	if err != nil {
		return nil, err
	}
	var c Config
	for _, p := range pairs {
		k, v, n := p.Key, p.Value, p.Line
		bad := func(err error) (*Config, error) {
			return nil, disk.Errorf(disk.ErrInvalid, "vdisk: config %s:%d: %s: %v", path, n, k, err)
		}
		switch k {
		case "tmp_directory":
			c.TempDir = v
		case "transports":
			c.Transports = v
		case "timeout":
			if c.Timeout, err = time.ParseDuration(v); err != nil {
				return bad(err)
			}
		case "retries", "nbd_connections", "nbd_in_flight", "async_workers":
			x, err := strconv.Atoi(v)
			if err != nil || x < 0 {
				return bad(disk.Errorf(disk.ErrInvalid, "want a count"))
			}
			switch k {
			case "retries":
				c.Retries = x
			case "nbd_connections":
				c.NBDConnections = x
			case "nbd_in_flight":
				c.NBDInFlight = x
			default:
				c.AsyncWorkers = x
			}
		case "log_level":
			c.LogLevel = v
		default:
			return nil, disk.Errorf(disk.ErrInvalid, "vdisk: config %s:%d: unknown key %q", path, n, k)
		}
	}
	return &c, nil
}
