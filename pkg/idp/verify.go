package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/extauthz/extauthz/pkg/secret"
)

// VerifierOptions configure a Verifier.
type VerifierOptions struct {
	// JWKSURL is where the signing keys are. When empty, it is found by
	// OpenID Connect discovery from Issuer.
	JWKSURL string
	// Issuer, when set, is the iss every token must carry.
	Issuer string
	// Audience, when set, is an aud every token must carry.
	Audience string
	// HTTPClient fetches discovery and the JWKS; nil for Go's defaults.
	HTTPClient *http.Client
	// UnknownKeyRefresh is how often at most an unknown kid makes the JWKS
	// be fetched again; one minute when zero.
	UnknownKeyRefresh time.Duration
	Logger            *zap.Logger
	Now               func() time.Time
}

// verifyLeeway absorbs clock skew between the IdP and this host for exp and nbf.
const verifyLeeway = 10 * time.Second

// maxDiscoveryBytes bounds a discovery document.
const maxDiscoveryBytes = 1 << 20

// Verifier checks access tokens that are JWTs against the issuer's published
// keys (keyfunc/v3): signature, exp, nbf, and iss and aud when configured.
// The keys are fetched on first use, refreshed hourly, and fetched again for
// an unknown kid at most once per UnknownKeyRefresh. It is safe for
// concurrent use; Close stops its background refreshes.
type Verifier struct {
	opts   VerifierOptions
	parser *jwt.Parser
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	kf keyfunc.Keyfunc // nil until the keys' location is known
}

// NewVerifier returns a Verifier for o. It does no I/O: keys are fetched
// when the first token arrives, so that an unreachable IdP cannot stop
// start-up.
func NewVerifier(o VerifierOptions) (*Verifier, error) {
	if o.JWKSURL == "" && o.Issuer == "" {
		return nil, errors.New("idp: verification needs a JWKS URL or an issuer to discover it from")
	}
	o.HTTPClient = withoutRedirects(o.HTTPClient)
	if o.UnknownKeyRefresh <= 0 {
		o.UnknownKeyRefresh = time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}),
		jwt.WithLeeway(verifyLeeway),
		jwt.WithTimeFunc(o.Now),
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Verifier{opts: o, parser: jwt.NewParser(popts...), ctx: ctx, cancel: cancel}, nil
}

// Identity describes what the Verifier accepts.
func (v *Verifier) Identity() string {
	return strings.Join([]string{v.opts.JWKSURL, v.opts.Issuer, v.opts.Audience}, "\x00")
}

// Close stops the background JWKS refreshes.
func (v *Verifier) Close() { v.cancel() }

// Verify checks token. A token that fails is KindBadResponse; keys that
// cannot be fetched are KindUnavailable.
func (v *Verifier) Verify(ctx context.Context, token string) error {
	kf, err := v.keys(ctx)
	if err != nil {
		return &Error{Kind: KindUnavailable, Err: err}
	}
	if _, err := v.parser.Parse(token, kf.KeyfuncCtx(ctx)); err != nil {
		if errors.Is(err, keyfunc.ErrKeyfunc) && v.empty(ctx, kf) {
			return &Error{Kind: KindUnavailable, Err: fmt.Errorf("the signing keys could not be fetched: %w", redactURL(err))}
		}
		return &Error{Kind: KindBadResponse, Err: fmt.Errorf("the access token failed verification: %w", redactURL(err))}
	}
	return nil
}

// empty reports whether no key has been fetched at all.
func (v *Verifier) empty(ctx context.Context, kf keyfunc.Keyfunc) bool {
	all, err := kf.Storage().KeyReadAll(ctx)
	return err != nil || len(all) == 0
}

// keys returns the key function, finding the JWKS first if needed. A
// failure is not kept: the next token tries again.
func (v *Verifier) keys(ctx context.Context) (keyfunc.Keyfunc, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.kf != nil {
		return v.kf, nil
	}
	jwksURL := v.opts.JWKSURL
	if jwksURL == "" {
		var err error
		if jwksURL, err = v.discover(ctx); err != nil {
			return nil, err
		}
	}
	log := v.opts.Logger
	kf, err := keyfunc.NewDefaultOverrideCtx(v.ctx, []string{jwksURL}, keyfunc.Override{
		Client:            v.opts.HTTPClient,
		HTTPTimeout:       DefaultTimeout,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(v.opts.UnknownKeyRefresh), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				log.Warn("fetching the JWKS failed", zap.Error(redactURL(err)), zap.String("jwks_url", secret.RedactURL(u)))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS %q: %w", secret.RedactURL(jwksURL), redactURL(err))
	}
	v.kf = kf
	return kf, nil
}

// discover reads the issuer's OpenID Connect discovery document for its
// jwks_uri, checking that it speaks for the issuer.
func (v *Verifier) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(v.opts.Issuer, "/") + "/.well-known/openid-configuration"
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	shown := secret.RedactURL(u) // the issuer's URL may carry credentials
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("discovery %q: %w", shown, redactURL(err))
	}
	resp, err := v.opts.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("discovery %q: %w", shown, redactURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery %q: HTTP %d (redirects are not followed)", shown, resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoveryBytes)).Decode(&doc); err != nil {
		return "", fmt.Errorf("discovery %q: %w", shown, err)
	}
	if doc.Issuer != v.opts.Issuer || doc.JWKSURI == "" {
		return "", fmt.Errorf("discovery %q: issuer %q and jwks_uri %q do not serve issuer %q",
			shown, secret.RedactURL(doc.Issuer), secret.RedactURL(doc.JWKSURI), secret.RedactURL(v.opts.Issuer))
	}
	return doc.JWKSURI, nil
}
