package auth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJWKSAlgorithms(t *testing.T) {
	keys := []testKey{newRSAKey(t, "rsa-1"), newECKey(t, "ec-1"), newEdKey(t, "ed-1")}
	impostors := []testKey{newRSAKey(t, "rsa-1"), newECKey(t, "ec-1"), newEdKey(t, "ed-1")} // same kids, other keys
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, keys...)
	v, err := NewVerifier(Config{JWKSFile: path})
	require.NoError(t, err)
	defer v.Close()
	now := time.Now()
	for i, k := range keys {
		t.Run(k.method.Alg(), func(t *testing.T) {
			c, err := v.Verify(k.sign(t, agentClaims(now)))
			require.NoError(t, err)
			assert.Equal(t, "a-1", c.UserID)
			assert.Equal(t, now.Add(time.Hour).Unix(), c.Expires)

			_, err = v.Verify(impostors[i].sign(t, agentClaims(now)))
			assert.ErrorIs(t, err, ErrInvalidToken)
			assert.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid)

			// Without kid, the only key of the token's algorithm is used.
			noKID := k
			noKID.kid = ""
			_, err = v.Verify(noKID.sign(t, agentClaims(now)))
			assert.NoError(t, err)

			// A kid of a key of another type does not select that key.
			other := keys[(i+1)%len(keys)]
			wrongType := k
			wrongType.kid = other.kid
			_, err = v.Verify(wrongType.sign(t, agentClaims(now)))
			assert.ErrorIs(t, err, ErrUnknownKey)
			assert.ErrorIs(t, err, ErrInvalidToken)
		})
	}
	_, err = v.Verify(hs256(t, secret, agentClaims(now)))
	assert.ErrorIs(t, err, ErrInvalidToken, "no HS256 with a JWKS only")
}

// TestJWKSFileRotation runs under synctest so the refresh tick needs no
// real waiting; the file itself is real.
func TestJWKSFileRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	a, b := newEdKey(t, "2025-a"), newECKey(t, "2025-b")
	writeJWKS(t, path, a)
	synctest.Test(t, func(t *testing.T) {
		var loadErrs atomic.Int32
		v, err := NewVerifier(Config{JWKSFile: path, JWKSRefresh: time.Minute, OnRefreshError: func(error) { loadErrs.Add(1) }})
		require.NoError(t, err)
		defer v.Close()
		tokA, tokB := a.sign(t, agentClaims(time.Now())), b.sign(t, agentClaims(time.Now()))
		_, err = v.Verify(tokA)
		require.NoError(t, err)
		_, err = v.Verify(tokB)
		require.ErrorIs(t, err, ErrUnknownKey)

		// The IdP publishes b next to a: the unknown kid re-reads the file.
		writeJWKS(t, path, a, b)
		_, err = v.Verify(tokB)
		require.NoError(t, err)

		// a is retired: tokens naming it work until the next refresh tick.
		writeJWKS(t, path, b)
		_, err = v.Verify(tokA)
		require.NoError(t, err, "a is still cached")
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		_, err = v.Verify(tokA)
		assert.ErrorIs(t, err, ErrUnknownKey)
		_, err = v.Verify(tokB)
		assert.NoError(t, err)

		// A broken rewrite keeps the last good keys and is reported.
		require.NoError(t, writeFile(path, "{not json"))
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		assert.EqualValues(t, 1, loadErrs.Load())
		_, err = v.Verify(tokB)
		assert.NoError(t, err)
		_, err = v.Verify(tokA)
		assert.ErrorContains(t, err, "last JWKS load failed")
	})
}

// jwksServer serves a JWKS the test can change, counting requests.
type jwksServer struct {
	*httptest.Server
	mu    sync.Mutex
	body  []byte
	cache string
	hits  atomic.Int32
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, cache := s.body, s.cache
		s.mu.Unlock()
		if cache != "" {
			w.Header().Set("Cache-Control", cache)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte) {
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

func TestJWKSURLRotation(t *testing.T) {
	a, b, c := newEdKey(t, "a"), newECKey(t, "b"), newEdKey(t, "c")
	srv := newJWKSServer(t, jwksJSON(t, a))
	clk := newClock()
	v, err := newVerifier(Config{JWKSURL: srv.URL}, clk.now)
	require.NoError(t, err)
	defer v.Close()
	tokA, tokB, tokC := a.sign(t, agentClaims(clk.now())), b.sign(t, agentClaims(clk.now())), c.sign(t, agentClaims(clk.now()))

	// The first Verify waits for the initial background fetch.
	_, err = v.Verify(tokA)
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.hits.Load())

	// b appears; the initial fetch was just now, so b's kid must wait.
	srv.set(jwksJSON(t, a, b))
	_, err = v.Verify(tokB)
	require.ErrorIs(t, err, ErrUnknownKey)
	require.EqualValues(t, 1, srv.hits.Load(), "rate limited")
	clk.advance(minRefetch)
	_, err = v.Verify(tokB)
	require.NoError(t, err, "an unknown kid refetches the JWKS")
	require.EqualValues(t, 2, srv.hits.Load())

	// An unknown kid floods in: at most one fetch per minRefetch, however
	// many tokens and goroutines.
	verifyMany := func(tok string) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_, err := v.Verify(tok)
				assert.ErrorIs(t, err, ErrUnknownKey)
			})
		}
		wg.Wait()
	}
	verifyMany(tokC)
	assert.EqualValues(t, 2, srv.hits.Load())
	clk.advance(minRefetch - time.Second)
	verifyMany(tokC)
	assert.EqualValues(t, 2, srv.hits.Load())
	clk.advance(time.Second)
	verifyMany(tokC)
	assert.EqualValues(t, 3, srv.hits.Load(), "one refetch for eight concurrent unknown kids")

	// Rotation: c in, a out.
	srv.set(jwksJSON(t, b, c))
	clk.advance(minRefetch)
	_, err = v.Verify(tokC)
	require.NoError(t, err)
	assert.EqualValues(t, 4, srv.hits.Load())
	_, err = v.Verify(tokA)
	assert.ErrorIs(t, err, ErrUnknownKey, "a was removed")

	// Refresh is the explicit, unlimited reload.
	srv.set(jwksJSON(t, a, b, c))
	require.NoError(t, v.Refresh(context.Background()))
	_, err = v.Verify(tokA)
	assert.NoError(t, err)
}

func TestJWKSURLErrors(t *testing.T) {
	a := newEdKey(t, "a")
	good := jwksJSON(t, a)
	huge := append(good[:len(good):len(good)], strings.Repeat(" ", maxJWKSSize)...)
	cases := map[string]struct {
		handler http.HandlerFunc
		want    string
	}{
		"oversized, Content-Length": {func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(huge)))
			_, _ = w.Write(huge)
		}, "more than 1048576"},
		"oversized, chunked": {func(w http.ResponseWriter, _ *http.Request) {
			w.(http.Flusher).Flush()
			_, _ = w.Write(huge)
		}, "larger than 1048576"},
		"HTTP 500": {func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }, "HTTP 500"},
		"not JSON": {func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) }, "not JSON"},
		"no usable key": {func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
		}, "no usable"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var broken atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if broken.Load() {
					tc.handler(w, r)
					return
				}
				_, _ = w.Write(good)
			}))
			defer srv.Close()
			reported := make(chan error, 1)
			v, err := NewVerifier(Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), OnRefreshError: func(err error) { reported <- err }})
			require.NoError(t, err)
			defer v.Close()
			tok := a.sign(t, agentClaims(time.Now()))
			_, err = v.Verify(tok)
			require.NoError(t, err)

			broken.Store(true)
			err = v.Refresh(context.Background())
			require.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, err, "Config.JWKSURL")
			_, err = v.Verify(tok)
			assert.NoError(t, err, "the last good keys stay in use")
			assert.Empty(t, reported, "Refresh returns its error instead of reporting it")
		})
	}

	// The first background fetch fails: reported, and tokens fail with
	// the reason.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(huge) }))
	defer srv.Close()
	reported := make(chan error, 1)
	v, err := NewVerifier(Config{JWKSURL: srv.URL, OnRefreshError: func(err error) { reported <- err }})
	require.NoError(t, err)
	defer v.Close()
	assert.ErrorContains(t, <-reported, "larger than")
	_, err = v.Verify(a.sign(t, agentClaims(time.Now())))
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.ErrorContains(t, err, "last JWKS load failed")
}

// TestCloseEndsWait: Close cancels a fetch in progress and releases the
// Verify calls waiting for it.
func TestCloseEndsWait(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // hangs until the client gives up
	}))
	defer srv.Close()
	v, err := NewVerifier(Config{JWKSURL: srv.URL})
	require.NoError(t, err)
	<-arrived
	done := make(chan error)
	go func() {
		_, err := v.Verify(newEdKey(t, "a").sign(t, agentClaims(time.Now())))
		done <- err
	}()
	require.NoError(t, v.Close())
	assert.ErrorIs(t, <-done, ErrUnknownKey)
	require.NoError(t, v.Close(), "idempotent")
}

func TestMaxAge(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":                                     0,
		"max-age=60":                           time.Minute,
		"public, max-age=300, must-revalidate": 5 * time.Minute,
		"MAX-AGE=10":                           10 * time.Second,
		`max-age="20"`:                         20 * time.Second,
		"no-cache":                             0,
		"max-age=abc":                          0,
		"max-age=-5":                           0,
		"max-age=0":                            0,
		"max-age=99999999999999999999":         0,
	} {
		assert.Equal(t, want, maxAge(in), "%q", in)
	}
}

func TestNextRefresh(t *testing.T) {
	const refresh = 5 * time.Minute
	for _, tc := range []struct {
		refresh, maxAge time.Duration
		err             error
		want            time.Duration
	}{
		{refresh, 0, nil, refresh},
		{refresh, time.Hour, nil, refresh},
		{refresh, 2 * time.Minute, nil, 2 * time.Minute},
		{refresh, time.Second, nil, minRefetch},
		{10 * time.Second, time.Second, nil, 10 * time.Second},
		{refresh, 0, fmt.Errorf("boom"), minRefetch},
		{10 * time.Second, 0, fmt.Errorf("boom"), 10 * time.Second},
	} {
		assert.Equal(t, tc.want, nextRefresh(tc.refresh, tc.maxAge, tc.err), "%+v", tc)
	}
}

// roundTripFunc serves HTTP in memory, so that URL refreshes can be timed
// under synctest (real sockets cannot be).
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestJWKSURLPeriodicRefresh(t *testing.T) {
	a, b := newEdKey(t, "a"), newEdKey(t, "b")
	synctest.Test(t, func(t *testing.T) {
		var hits atomic.Int32
		var mu sync.Mutex
		body, cache := jwksJSON(t, a), "public, max-age=120"
		client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			hits.Add(1)
			mu.Lock()
			defer mu.Unlock()
			return &http.Response{StatusCode: http.StatusOK, Request: r,
				Header: http.Header{"Cache-Control": {cache}}, Body: io.NopCloser(bytes.NewReader(body))}, nil
		})}
		v, err := NewVerifier(Config{JWKSURL: "https://idp.example/.well-known/jwks.json", HTTPClient: client})
		require.NoError(t, err)
		defer v.Close()
		synctest.Wait()
		require.EqualValues(t, 1, hits.Load(), "initial fetch")

		// max-age=120 shortens the 5 min default.
		mu.Lock()
		body, cache = jwksJSON(t, b), ""
		mu.Unlock()
		time.Sleep(119 * time.Second)
		synctest.Wait()
		assert.EqualValues(t, 1, hits.Load())
		time.Sleep(time.Second)
		synctest.Wait()
		assert.EqualValues(t, 2, hits.Load(), "refetched after max-age")
		_, err = v.Verify(b.sign(t, agentClaims(time.Now())))
		require.NoError(t, err)
		_, err = v.Verify(a.sign(t, agentClaims(time.Now())))
		require.ErrorIs(t, err, ErrUnknownKey, "a is gone and the refetch it triggers is rate limited")
		assert.EqualValues(t, 2, hits.Load())

		// Without Cache-Control, JWKSRefresh (5 min) applies.
		time.Sleep(5*time.Minute - time.Second)
		synctest.Wait()
		assert.EqualValues(t, 2, hits.Load())
		time.Sleep(time.Second)
		synctest.Wait()
		assert.EqualValues(t, 3, hits.Load())
	})
}
