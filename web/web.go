// Package web holds the live page's static files (HTML, JavaScript, CSS),
// embedded in the API binary: no build step, no Node, nothing fetched from
// elsewhere at run time.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// Files is the page's files: index.html, app.js, style.css.
func Files() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}
