package docs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDocsUpToDate regenerates the Swagger spec from the handlers'
// annotations and fails if the committed docs/ differ: run `make docs`.
func TestDocsUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "docs")
	cmd := exec.Command("go", "tool", "swag", "init", "--quiet", "-g", "cmd/api/main.go", "-o", out)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swag init: %v\n%s", err, b)
	}
	for _, name := range []string{"docs.go", "swagger.json", "swagger.yaml"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("docs/%s is out of date with the annotations: run `make docs` and commit the result", name)
		}
	}
}
