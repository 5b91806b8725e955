package vmdk

import (
	"context"
)

// Check verifies an image (see CheckOptions) and returns what it found.
func Check(ctx context.Context, path string, o *CheckOptions) (*CheckReport, error) {
	return &CheckReport{}, nil
}
