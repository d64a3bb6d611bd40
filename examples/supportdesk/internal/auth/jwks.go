package auth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxJWKSSize  = 1 << 20          // bytes of a JWKS file or response
	fetchTimeout = 10 * time.Second // per JWKS fetch
	// minRefetch bounds how often a token with an unknown kid makes the
	// Verifier fetch a JWKS URL, and how short Cache-Control max-age can
	// make the refresh interval.
	minRefetch = 30 * time.Second
)

// source loads a JWKS.
type source interface {
	// load returns the current key set, or nil when it is unchanged since
	// the last load; maxAge is how long the source asks to be cached (0:
	// no opinion). Calls are serialized by jwks.loadMu.
	load(ctx context.Context) (ks *keySet, maxAge time.Duration, err error)
}

// jwks keeps a JWKS's keys fresh. It owns one goroutine (run), which does
// the periodic loads and the loads requested by tokens with unknown kids.
type jwks struct {
	src     source
	label   string                 // the Config field naming the source, for errors
	keys    atomic.Pointer[keySet] // copy-on-write snapshot read by Verify
	refresh time.Duration
	minGap  time.Duration // between kid-triggered loads; 0 for files
	now     func() time.Time
	onErr   func(error)
	idle    interface{ CloseIdleConnections() } // our own HTTP transport, or nil

	ctx       context.Context // cancelled by close
	cancel    context.CancelFunc
	done      chan struct{} // closed when run returns
	kick      chan struct{} // capacity 1: a kid-triggered load is wanted
	closeOnce sync.Once

	loadMu sync.Mutex // serializes src.load (run and Refresh)

	mu       sync.Mutex
	last     time.Time     // when the last load started or was requested
	inflight chan struct{} // closed when the requested load finished; nil if none
	lastErr  error         // of the last load that read something; nil after a success
}

func newJWKS(cfg Config, now func() time.Time) (*jwks, error) {
	j := &jwks{
		refresh: cfg.JWKSRefresh,
		now:     now,
		onErr:   cfg.OnRefreshError,
		done:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	j.ctx, j.cancel = context.WithCancel(context.Background()) // the Verifier's lifetime
	if cfg.JWKSFile != "" {
		j.src, j.label = &fileSource{path: cfg.JWKSFile}, "Config.JWKSFile"
		// A file is local: read it now so a bad path or file fails
		// NewVerifier, and check it on every unknown kid (an fstat).
		if _, err := j.reload(j.ctx); err != nil {
			j.cancel()
			return nil, err
		}
	} else {
		client := cfg.HTTPClient
		if client == nil {
			tr := &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				TLSHandshakeTimeout: fetchTimeout,
				MaxIdleConns:        2,
				IdleConnTimeout:     90 * time.Second,
				ForceAttemptHTTP2:   true,
			}
			client = &http.Client{Transport: tr, Timeout: fetchTimeout}
			j.idle = tr
		}
		j.src, j.label = &urlSource{url: cfg.JWKSURL, client: client}, "Config.JWKSURL"
		j.minGap = minRefetch
		// The first fetch runs in the goroutine; Verify calls before it
		// finishes wait for it as for any kid-triggered load.
		j.inflight = make(chan struct{})
		j.kick <- struct{}{}
	}
	go j.run()
	return j, nil
}

// run is the owner goroutine: it loads on every refresh tick and on every
// kick, until close.
func (j *jwks) run() {
	defer close(j.done)
	t := time.NewTimer(j.refresh)
	defer t.Stop()
	for {
		kicked := false
		select {
		case <-j.ctx.Done():
			return
		case <-t.C:
		case <-j.kick:
			kicked = true
		}
		next, err := j.reload(j.ctx)
		t.Reset(next)
		if kicked {
			j.mu.Lock()
			close(j.inflight)
			j.inflight = nil
			j.mu.Unlock()
		}
		if err != nil && j.onErr != nil && j.ctx.Err() == nil {
			j.onErr(err)
		}
	}
}

// reload loads the source once and installs the keys if they changed. It
// returns when the next periodic load is due.
func (j *jwks) reload(ctx context.Context) (time.Duration, error) {
	j.loadMu.Lock()
	j.mu.Lock()
	j.last = j.now() // any load makes the keys fresh: kid-triggered ones wait minGap
	j.mu.Unlock()
	ks, maxAge, err := j.src.load(ctx)
	if err != nil {
		err = fmt.Errorf("auth: %s: %w", j.label, err)
	} else if ks != nil {
		j.keys.Store(ks)
	}
	if err != nil || ks != nil { // "unchanged" keeps the verdict on the current version
		j.mu.Lock()
		j.lastErr = err
		j.mu.Unlock()
	}
	j.loadMu.Unlock()
	return nextRefresh(j.refresh, maxAge, err), err
}

// nextRefresh: refresh, shortened by a positive max-age but not below
// minRefetch; after a failure, retry after minRefetch.
func nextRefresh(refresh, maxAge time.Duration, err error) time.Duration {
	next := refresh
	if err != nil {
		return min(next, minRefetch)
	}
	if maxAge > 0 && maxAge < next {
		next = max(maxAge, min(refresh, minRefetch))
	}
	return next
}

// key returns the key for alg and kid, asking for a (rate-limited) reload
// and waiting for it when the current keys lack it.
func (j *jwks) key(alg, kid string) (any, error) {
	if k := j.keys.Load().find(alg, kid); k != nil {
		return k, nil
	}
	if j.await() {
		if k := j.keys.Load().find(alg, kid); k != nil {
			return k, nil
		}
	}
	j.mu.Lock()
	lastErr := j.lastErr
	j.mu.Unlock()
	if lastErr != nil {
		return nil, fmt.Errorf("%w: kid %q for %s (last JWKS load failed: %v)", ErrUnknownKey, kid, alg, lastErr)
	}
	return nil, fmt.Errorf("%w: kid %q for %s", ErrUnknownKey, kid, alg)
}

// await requests a load from the owner goroutine, unless one is already
// in flight (then it joins it) or the last request is less than minGap
// old, and waits for it. It reports whether a load finished.
func (j *jwks) await() bool {
	j.mu.Lock()
	ch := j.inflight
	if ch == nil {
		now := j.now()
		if j.minGap > 0 && now.Sub(j.last) < j.minGap {
			j.mu.Unlock()
			return false
		}
		j.last = now
		ch = make(chan struct{})
		j.inflight = ch
		select {
		case j.kick <- struct{}{}: // never full here: inflight was nil
		default:
		}
	}
	j.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-j.ctx.Done():
		return false
	}
}

func (j *jwks) close() {
	j.closeOnce.Do(func() {
		j.cancel()
		<-j.done
		if j.idle != nil {
			j.idle.CloseIdleConnections()
		}
	})
}

// readLimited reads r to the end, failing beyond maxJWKSSize bytes.
func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSSize)
	}
	return data, nil
}

// fileSource reads a JWKS file when its identity, size or mtime changed.
type fileSource struct {
	path string
	prev os.FileInfo // of the last read attempt
}

func (f *fileSource) load(context.Context) (*keySet, time.Duration, error) {
	file, err := os.Open(f.path)
	if err != nil {
		return nil, 0, err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, 0, err
	}
	if f.prev != nil && os.SameFile(f.prev, fi) && fi.Size() == f.prev.Size() && fi.ModTime().Equal(f.prev.ModTime()) {
		return nil, 0, nil
	}
	// Remember this version even if it is broken: it is read again only
	// once it changes, and the previous keys stay in use meanwhile.
	f.prev = fi
	data, err := readLimited(file)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", f.path, err)
	}
	ks, err := parseJWKS(data)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", f.path, err)
	}
	return ks, 0, nil
}

// urlSource fetches a JWKS over HTTP(S).
type urlSource struct {
	url    string
	client *http.Client
}

func (u *urlSource) load(ctx context.Context) (*keySet, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: HTTP %s", u.url, resp.Status)
	}
	if resp.ContentLength > maxJWKSSize {
		return nil, 0, fmt.Errorf("GET %s: %d bytes, more than %d", u.url, resp.ContentLength, maxJWKSSize)
	}
	data, err := readLimited(resp.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", u.url, err)
	}
	ks, err := parseJWKS(data)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", u.url, err)
	}
	return ks, maxAge(resp.Header.Get("Cache-Control")), nil
}

// maxAge returns a Cache-Control header's max-age, or 0.
func maxAge(cacheControl string) time.Duration {
	for d := range strings.SplitSeq(cacheControl, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		secs, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || secs <= 0 || secs > int64((100*365*24*time.Hour)/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	return 0
}
