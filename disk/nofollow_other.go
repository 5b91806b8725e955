//go:build !unix

package disk

// This platform has no O_NOFOLLOW; ReadFileNoFollow then checks the file
// it opened instead.
const (
	oNoFollow = 0
	oNonBlock = 0
)
