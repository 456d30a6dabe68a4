package ryw

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Response headers that say where a request was served, and why, and
// the client's token, which the client sends back in the header or the
// cookie.
const (
	ServedByHeader = "X-Served-By"
	ReasonHeader   = "X-Routing-Reason"
	// TokenHeader carries the client's session, signed: the position of
	// its last write (a second copy of what Redis records) and, with
	// monotonic reads, the highest position its reads may have shown.
	// Responses set it, in the header and in TokenCookie; a client sends it
	// back in either.
	TokenHeader = "X-RYW-Token"
	TokenCookie = "ryw_token"
)

// ErrInvalidToken means the token a client sent back (TokenHeader or
// TokenCookie) is not a token at all. A real token whose signature does
// not hold for the caller is not an error: it is ignored, and counted.
var ErrInvalidToken = errors.New("invalid token")

// ErrUnauthenticated wraps the error of HTTPOptions.User: the caller could
// not be named.
var ErrUnauthenticated = errors.New("unauthenticated")

// HTTPOptions configures Middleware.
type HTTPOptions struct {
	// User names the caller: the identity whose writes the caller's reads
	// must show ("" for an anonymous caller, whose reads are stale-ok). An
	// error refuses the request (401). Required.
	User func(*http.Request) (string, error)
	// Access says what a request does (default DefaultAccess: GET, HEAD and
	// OPTIONS must show the caller's own writes, other methods write). Say
	// StaleRead for reads that may be slightly stale, to offload them. It
	// runs before a ServeMux around which the middleware sits has matched
	// the route (r.Pattern is still empty): match on r.URL.Path, or wrap
	// each route with a middleware of its own (Always).
	Access func(*http.Request) Access
	// OnError answers a request that the middleware refuses (ErrInvalidToken,
	// ErrUnauthenticated), or whose write it could not secure
	// (ErrUnconfirmed: the handler's response is replaced). Default:
	// WriteError.
	OnError func(w http.ResponseWriter, r *http.Request, err error)
}

func (o *HTTPOptions) setDefaults() {
	if o.Access == nil {
		o.Access = DefaultAccess
	}
	if o.OnError == nil {
		o.OnError = WriteError
	}
}

// DefaultAccess is the access of a request by its method: GET, HEAD and
// OPTIONS are reads that must show the caller's own writes, and every other
// method writes.
func DefaultAccess(r *http.Request) Access {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return OwnRead
	}
	return Write
}

// Always is an HTTPOptions.Access that gives every request a.
func Always(a Access) func(*http.Request) Access {
	return func(*http.Request) Access { return a }
}

// Middleware returns net/http middleware that gives each request a Job:
// it reads and verifies the client's token, decides where the request's
// reads go, and puts the decision in the request's context, so that GORM
// and SQL route every statement the handler runs with it. Before the
// response's headers go out, it records the request's writes (or replaces
// the response with OnError's if they cannot be secured) and sets
// X-Served-By (the node that ran the last statement, "none" if none ran),
// X-Routing-Reason, and the client's new token (header and cookie).
func (b *Balancer) Middleware(o HTTPOptions) func(http.Handler) http.Handler {
	if o.User == nil {
		panic("ryw: HTTPOptions.User is required: it names the caller whose writes must be shown")
	}
	o.setDefaults()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rw, r, err := b.begin(w, r, &o)
			if err != nil {
				o.OnError(w, r, err)
				return
			}
			defer rw.job.end()
			next.ServeHTTP(rw, r)
			rw.done(true)
		})
	}
}

// begin starts the request's job and returns the writer that finishes it.
func (b *Balancer) begin(w http.ResponseWriter, r *http.Request, o *HTTPOptions) (*ResponseWriter, *http.Request, error) {
	user, err := o.User(r)
	if err != nil {
		return nil, r, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	ses, raw, err := b.clientSession(r, user)
	if err != nil {
		return nil, r, err
	}
	ctx, job := b.router.begin(r.Context(), user, o.Access(r), ses)
	job.sent, job.sentToken = ses, raw
	rw := &ResponseWriter{ResponseWriter: w, b: b, job: job, r: r, onError: o.OnError}
	rw.r = r.WithContext(ctx)
	return rw, rw.r, nil
}

// clientSession reads the token the client sent back (the header, else
// the cookie) and returns its session if its signature holds for user,
// else none.
func (b *Balancer) clientSession(r *http.Request, user string) (ses Session, token string, err error) {
	raw, source := r.Header.Get(TokenHeader), TokenHeader
	if raw == "" {
		if ck, err := r.Cookie(TokenCookie); err == nil {
			raw, source = ck.Value, "the "+TokenCookie+" cookie"
		}
	}
	if raw == "" {
		return Session{}, "", nil
	}
	ses, ok, err := b.signer.Verify(user, raw)
	if err != nil {
		if len(raw) > 80 {
			raw = raw[:80] + "..."
		}
		return Session{}, "", fmt.Errorf("%w: %s must be a token as a response returned it, like s2.7302061513459013653.1.0/3000148.1.0/30001C0.9f3c2a1b44d0e7aa.q1Xz9k3mZg2T0p8Vv1Y4Qw, got %q", ErrInvalidToken, source, raw)
	}
	if !ok {
		b.router.IgnoreToken(TokenBadSignature)
		return Session{}, "", nil
	}
	return ses, raw, nil
}

// ResponseWriter is the http.ResponseWriter that Middleware hands the
// handler: it finishes the request's job just before the headers go out.
// Framework adapters use it through Wrap; handlers need not know it.
type ResponseWriter struct {
	http.ResponseWriter
	b       *Balancer
	job     *Job
	r       *http.Request
	onError func(http.ResponseWriter, *http.Request, error)
	started bool // the headers have been handled
	refused bool // the response was replaced: the handler's is dropped
}

// WriteHeader secures the request's writes and adds the routing headers
// and the token, then sends the status; if the writes could not be
// secured, OnError's response goes out instead.
func (w *ResponseWriter) WriteHeader(code int) {
	if w.started {
		if !w.refused {
			w.ResponseWriter.WriteHeader(code)
		}
		return
	}
	w.started = true
	if err := w.job.secure(); err != nil {
		w.refused = true
		h := w.ResponseWriter.Header()
		for _, k := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Etag", "Last-Modified"} {
			h.Del(k)
		}
		w.headers()
		w.onError(w.ResponseWriter, w.r, err)
		return
	}
	w.headers()
	w.ResponseWriter.WriteHeader(code)
}

// headers sets X-Served-By, X-Routing-Reason and the client's token.
func (w *ResponseWriter) headers() {
	h := w.ResponseWriter.Header()
	node, reason := w.job.ServedBy()
	if node == "" {
		node = "none"
	}
	h.Set(ServedByHeader, node)
	h.Set(ReasonHeader, string(reason))
	if s := w.job.session(); !s.IsZero() {
		// A session the request did not change goes back as the client
		// sent it, unsigned again. It is still set, header and cookie,
		// so that a client that keeps the last token it got keeps it, and
		// the cookie's lifetime starts anew.
		signed := w.job.sentToken
		if signed == "" || s != w.job.sent {
			signed = w.b.signer.Sign(w.job.user, s)
		}
		h.Set(TokenHeader, signed)
		secure := w.r.TLS != nil || w.r.Header.Get("X-Forwarded-Proto") == "https"
		h.Add("Set-Cookie", TokenCookie+"="+signed+w.b.cookieAttrs(secure))
	}
}

func (w *ResponseWriter) Write(b []byte) (int, error) {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends the headers (see WriteHeader) and flushes what was written.
func (w *ResponseWriter) Flush() {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the writer underneath, for http.ResponseController.
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Started reports whether the headers have been handled.
func (w *ResponseWriter) Started() bool { return w.started }

// done runs after the handler: the request's writes are recorded, those
// made after the headers went out too (the client's token cannot carry
// them, but every instance's routing does); with respond, a handler that
// wrote nothing gets its headers now.
func (w *ResponseWriter) done(respond bool) {
	if !w.started && respond {
		w.WriteHeader(http.StatusOK)
		return
	}
	_ = w.job.secure()
}

// Wrap is Middleware for framework adapters: it starts the request's job
// and returns the writer and request to hand the framework's handlers,
// and done, to call when they have returned: it records the request's
// writes and, with respond, sends the headers if nothing was written (say
// false when the framework will still write the response, such as an
// error its outer middleware renders). If the request is refused, err says
// why (ErrInvalidToken, ErrUnauthenticated) and nothing is written: the
// adapter answers it.
func (b *Balancer) Wrap(w http.ResponseWriter, r *http.Request, o HTTPOptions) (rw *ResponseWriter, req *http.Request, done func(respond bool), err error) {
	if o.User == nil {
		return nil, r, nil, errors.New("ryw: HTTPOptions.User is required")
	}
	o.setDefaults()
	rw, req, err = b.begin(w, r, &o)
	if err != nil {
		return nil, r, nil, err
	}
	return rw, req, func(respond bool) { rw.done(respond); rw.job.end() }, nil
}

// ErrorBody is the JSON body WriteError answers with.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// ErrorStatus maps the middleware's errors to an HTTP status and a stable
// code: 400 invalid_token, 401 unauthenticated, 503 write_unconfirmed,
// overloaded or unsettled (with Retry-After); any other error is 500
// internal.
func ErrorStatus(err error) (status int, code, message string) {
	switch {
	case errors.Is(err, ErrInvalidToken):
		return http.StatusBadRequest, "invalid_token", err.Error()
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated", err.Error()
	case errors.Is(err, ErrUnconfirmed):
		return http.StatusServiceUnavailable, "write_unconfirmed", "the change was saved, but the service could not make sure your next reads show it; repeat the request"
	case errors.Is(err, ErrOverloaded):
		return http.StatusServiceUnavailable, "overloaded", "the service is overloaded; try again shortly"
	case errors.Is(err, ErrUnsettled):
		return http.StatusServiceUnavailable, "unsettled", "the database has not finished making visible a change this client has already been shown; try again shortly"
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// WriteError answers err as JSON, {"error": {"code": ..., "message": ...}},
// with the status ErrorStatus gives it.
func WriteError(w http.ResponseWriter, _ *http.Request, err error) {
	status, code, message := ErrorStatus(err)
	var body ErrorBody
	body.Error.Code, body.Error.Message = code, message
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// cookieAttrs returns the token cookie's attributes, as http.Cookie
// writes them, once per setting: a token's characters (digits, letters,
// '.', '/', '-', '_') need no quoting.
func (b *Balancer) cookieAttrs(secure bool) string {
	i := 0
	if secure {
		i = 1
	}
	if a := b.cookieTail[i].Load(); a != nil {
		return *a
	}
	ck := &http.Cookie{
		Name: TokenCookie, Value: "x", Path: "/", MaxAge: int(b.cfg.MarkerTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secure,
	}
	a := strings.TrimPrefix(ck.String(), TokenCookie+"=x")
	b.cookieTail[i].Store(&a)
	return a
}
