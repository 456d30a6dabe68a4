package middleware

import (
	"testing"

	"github.com/google/uuid"
)

func TestSubjectNamespaceIsItsDocumentedDerivation(t *testing.T) {
	if got := uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/ryw-go/ryw/auth/subject")); got != SubjectNamespace {
		t.Errorf("SubjectNamespace = %s, its derivation gives %s", SubjectNamespace, got)
	}
}

func TestUserFromSubject(t *testing.T) {
	const iss = "https://issuer.example.com/"
	id := uuid.New()
	for _, tt := range []struct {
		name, iss, sub string
		want           uuid.UUID
	}{
		{"a UUID is the user id", iss, id.String(), id},
		{"in any case", iss, "2C9D5A8E-0B7F-4D3E-9A61-5F0C8E7B1A24", uuid.MustParse("2c9d5a8e-0b7f-4d3e-9a61-5f0c8e7b1a24")},
		// The value the docs give, as Python's uuid.uuid5 computes it.
		{"another subject: UUIDv5 of iss and sub", iss, "auth0|abc", uuid.MustParse("e0ec12e8-dcd5-5b86-a090-15e4fd32379f")},
		{"the nil UUID is not a user", iss, uuid.Nil.String(), uuid.NewSHA1(SubjectNamespace, []byte(iss+"\n"+uuid.Nil.String()))},
		{"a braced UUID is not one", iss, "{" + id.String() + "}", uuid.NewSHA1(SubjectNamespace, []byte(iss+"\n{"+id.String()+"}"))},
	} {
		if got := UserFromSubject(tt.iss, tt.sub); got != tt.want {
			t.Errorf("%s: UserFromSubject(%q, %q) = %s, want %s", tt.name, tt.iss, tt.sub, got, tt.want)
		}
	}
	if a, b := UserFromSubject("https://a.example/", "42"), UserFromSubject("https://b.example/", "42"); a == b {
		t.Error("the same sub from two issuers is the same user")
	}
	if a, b := UserFromSubject("https://a.example/x", "y"), UserFromSubject("https://a.example/", "xy"); a == b {
		t.Error("iss and sub run together")
	}
}
