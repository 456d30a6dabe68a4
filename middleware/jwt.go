package middleware

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// ErrUnauthenticated means a request has no valid bearer token: 401 with
// WWW-Authenticate. The wrapped message says what was wrong with it.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrDemoHeaderRefused means X-Demo-UserId came to a service that
// identifies users by bearer tokens: refused, so that nobody believes it is
// trusted.
var ErrDemoHeaderRefused = errors.New("X-Demo-UserId is not accepted here: this service identifies users by an Authorization: Bearer token (AUTH_MODE=jwt)")

// Algorithms a token may be signed with: asymmetric ones only, so that
// neither "none" nor an HMAC keyed with a public key can pass.
var Algorithms = []string{"RS256", "ES256", "EdDSA"}

// maxTokenBytes bounds a bearer token: real ones are well under 2 KB.
const maxTokenBytes = 8 << 10

// SubjectNamespace is the UUIDv5 namespace of user ids derived from tokens
// whose sub is not a UUID: UUIDv5(SubjectNamespace, iss + "\n" + sub). It
// is UUIDv5(URL namespace, "https://github.com/ryw-go/ryw/auth/subject"),
// 7b66d1a9-1635-5db5-9730-ff437b02cf2c, fixed for ever: changing it would
// give every such user a new id.
var SubjectNamespace = uuid.MustParse("7b66d1a9-1635-5db5-9730-ff437b02cf2c")

// UserFromSubject is the user id of a token's subject: the sub itself when
// it is a UUID (in its 36-character form, any case), else a UUIDv5 of the
// issuer and the sub, stable across tokens and instances and distinct
// between issuers.
func UserFromSubject(iss, sub string) uuid.UUID {
	if len(sub) == 36 {
		if id, err := uuid.Parse(sub); err == nil && id != uuid.Nil {
			return id
		}
	}
	return uuid.NewSHA1(SubjectNamespace, []byte(iss+"\n"+sub))
}

// Verifier checks bearer tokens: signature against the issuer's keys, the
// algorithm, iss, aud, exp, nbf and iat (with Leeway).
type Verifier struct {
	keys   *Keys
	parser *jwt.Parser
	// claims checks the claims alone, before an unknown key costs a fetch.
	claims *jwt.Validator
}

// VerifierConfig is what a token must match.
type VerifierConfig struct {
	Issuer, Audience string
	// Leeway absorbs clock skew between the issuer and this service.
	Leeway time.Duration
}

// NewVerifier returns a verifier of tokens signed with keys.
func NewVerifier(keys *Keys, cfg VerifierConfig) *Verifier {
	claims := []jwt.ParserOption{
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	return &Verifier{
		keys:   keys,
		parser: jwt.NewParser(append(claims, jwt.WithValidMethods(Algorithms))...),
		claims: jwt.NewValidator(claims...),
	}
}

// Verify returns the user a token identifies. Its errors wrap
// ErrUnauthenticated, or ErrKeysUnavailable when the token could not be
// checked because the issuer's keys cannot be fetched.
func (v *Verifier) Verify(ctx context.Context, raw string) (uuid.UUID, error) {
	var claims jwt.RegisteredClaims
	precheck := func(t *jwt.Token) error {
		if !slices.Contains(Algorithms, t.Method.Alg()) {
			return jwt.ErrTokenSignatureInvalid
		}
		return v.claims.Validate(t.Claims)
	}
	_, err := v.parser.ParseWithClaims(raw, &claims, v.keys.Keyfunc(ctx, precheck))
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return uuid.Nil, err // the client's deadline, not the token's fault
	case errors.Is(err, ErrKeysUnavailable):
		return uuid.Nil, err
	case err != nil:
		return uuid.Nil, fmt.Errorf("%w: %s", ErrUnauthenticated, tokenProblem(err))
	case claims.Subject == "":
		return uuid.Nil, fmt.Errorf("%w: the token has no sub", ErrUnauthenticated)
	}
	return UserFromSubject(claims.Issuer, claims.Subject), nil
}

// tokenProblem says briefly why a token was refused, without echoing it.
func tokenProblem(err error) string {
	for _, p := range []struct {
		err error
		msg string
	}{
		{jwt.ErrTokenMalformed, "the token is malformed"},
		{jwt.ErrTokenExpired, "the token has expired"},
		{jwt.ErrTokenNotValidYet, "the token is not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "the token was issued in the future"},
		{jwt.ErrTokenRequiredClaimMissing, "the token lacks a required claim (exp, iss or aud)"},
		{jwt.ErrTokenInvalidIssuer, "the token is from another issuer"},
		{jwt.ErrTokenInvalidAudience, "the token is for another audience"},
		{jwt.ErrTokenSignatureInvalid, "the token's signature is invalid"},
		{jwt.ErrTokenUnverifiable, "the token cannot be verified (unknown key or algorithm)"},
	} {
		if errors.Is(err, p.err) {
			return p.msg
		}
	}
	return "the token is invalid"
}

// BearerIdentity identifies the caller by an Authorization: Bearer token
// and stores the verified user id in the request context, as Identity does
// in demo mode. With required false a request without Authorization goes
// on anonymous (no user in the context); a token that is present is always
// checked. X-Demo-UserId is refused, never ignored.
func BearerIdentity(v *Verifier, required bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		if len(c.Request.Header.Values(UserIDHeader)) > 0 {
			fail(c, ErrDemoHeaderRefused)
			return
		}
		auth := c.Request.Header.Values("Authorization")
		if len(auth) == 0 && !required {
			c.Next()
			return
		}
		raw, err := bearerToken(auth)
		if err != nil {
			fail(c, err)
			return
		}
		id, err := v.Verify(c.Request.Context(), raw)
		if err != nil {
			fail(c, err)
			return
		}
		c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), userKey{}, id))
		c.Next()
	}
}

func bearerToken(values []string) (string, error) {
	switch {
	case len(values) == 0:
		return "", fmt.Errorf("%w: send Authorization: Bearer <token>", ErrUnauthenticated)
	case len(values) > 1:
		return "", fmt.Errorf("%w: send one Authorization header, got %d", ErrUnauthenticated, len(values))
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: the Authorization header must read Bearer <token>", ErrUnauthenticated)
	}
	token = strings.TrimSpace(token)
	switch {
	case token == "":
		return "", fmt.Errorf("%w: the bearer token is empty", ErrUnauthenticated)
	case len(token) > maxTokenBytes:
		return "", fmt.Errorf("%w: the bearer token is longer than %d bytes", ErrUnauthenticated, maxTokenBytes)
	}
	return token, nil
}
