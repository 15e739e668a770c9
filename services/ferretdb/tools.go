//go:build tools

// Package tools pins FerretDB as a dependency of this wrapper module.
//
// Building github.com/FerretDB/FerretDB/cmd/ferretdb from here (instead of
// `go install ...@version`) keeps FerretDB a dependency rather than the main
// module, so its version package does not panic looking for a generated
// version.txt. Build with scripts/services.sh (or:
// go build -o ../../.services/bin/ferretdb github.com/FerretDB/FerretDB/cmd/ferretdb).
package tools

import (
	_ "github.com/FerretDB/FerretDB/cmd/ferretdb"
)
