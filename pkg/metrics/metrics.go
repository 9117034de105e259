// Package metrics holds extauthz's Prometheus instruments as one struct,
// built against a registry and passed to the packages that count, never
// reached for as a global.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the instruments. Every name starts with extauthz_. Labels hold
// policy names, outcome codes and tiers, never a client id, secret or token.
type Metrics struct {
	// Checks counts decisions by policy, decision (allow, deny) and code
	// (ok or the denial's error code).
	// Checks, CheckDuration and CacheLookups count every Check: they are
	// striped (striped.go).
	Checks *StripedCounterVec
	// CheckDuration is the time a Check takes, by decision.
	CheckDuration *StripedHistogramVec
	// CacheLookups counts token lookups by tier (memory, redis) and result
	// (hit, miss, stale: served while its refresh runs or the IdP fails).
	CacheLookups *StripedCounterVec
	// NegativeHits counts requests answered with a remembered failure.
	NegativeHits prometheus.Counter
	// IdPRequests counts token requests by policy and outcome (ok, or the
	// idp.Kind of the failure).
	IdPRequests *prometheus.CounterVec
	// IdPRefusals counts token requests not sent, to protect the IdP, by
	// policy and reason (failure_budget, endpoint_budget, queue_full,
	// abandoned).
	IdPRefusals *prometheus.CounterVec
	// IdPOpen and IdPQueued are the token requests open at each token
	// endpoint and those waiting for a place, by endpoint (its URL without
	// userinfo or query).
	IdPOpen, IdPQueued *prometheus.GaugeVec
	// IdPDuration is the time a token request takes, retries included.
	IdPDuration *prometheus.HistogramVec
	// Refreshes counts background refreshes by result (ok, error).
	Refreshes *prometheus.CounterVec
	// ConfigReloads counts reloads by result (applied, refused, unchanged).
	ConfigReloads *prometheus.CounterVec
	// RedisUp is 1 while a Redis deployment answers, 0 while it is marked down.
	RedisUp *prometheus.GaugeVec
	// RedisErrors counts failed Redis calls by deployment.
	RedisErrors *prometheus.CounterVec
	// PurgeSignalsRefused counts purge announcements and generation
	// counter values not believed, by reason (forged, replayed,
	// implausible).
	PurgeSignalsRefused *prometheus.CounterVec
	// Purges counts tokens dropped by the admin API, by tier.
	Purges *prometheus.CounterVec
	// CallerConnections counts connections to the check listeners that
	// serve TLS, by listener (grpc, http) and result (accepted, or why the
	// caller was refused: callers.Results).
	CallerConnections *prometheus.CounterVec
	// GRPCStreamsRefused counts gRPC streams refused because the header
	// lists of the streams open at once reached their bound.
	GRPCStreamsRefused prometheus.Counter
	// HTTPConnectionsRefused counts plain HTTP/1 connections closed
	// because as many were reading a request's headers at once as allowed.
	HTTPConnectionsRefused prometheus.Counter
}

// New registers the instruments, with Go and process collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := newMetrics()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(m.Checks, m.CheckDuration, m.CacheLookups, m.NegativeHits, m.IdPRequests, m.IdPRefusals, m.IdPDuration,
		m.IdPOpen, m.IdPQueued, m.Refreshes, m.ConfigReloads, m.RedisUp, m.RedisErrors, m.PurgeSignalsRefused, m.Purges, m.CallerConnections, m.GRPCStreamsRefused, m.HTTPConnectionsRefused)
	return m
}

// Nop returns instruments registered nowhere, for tests and tools.
func Nop() *Metrics { return newMetrics() }

func newMetrics() *Metrics {
	latency := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	idpLatency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	return &Metrics{
		Checks: NewStripedCounterVec(prometheus.CounterOpts{
			Name: "extauthz_checks_total", Help: "Authorization checks by policy, decision and code.",
		}, []string{"policy", "decision", "code"}),
		CheckDuration: NewStripedHistogramVec(prometheus.HistogramOpts{
			Name: "extauthz_check_duration_seconds", Help: "Time to decide a check.", Buckets: latency,
		}, []string{"decision"}),
		CacheLookups: NewStripedCounterVec(prometheus.CounterOpts{
			Name: "extauthz_cache_lookups_total", Help: "Token lookups by tier and result.",
		}, []string{"tier", "result"}),
		NegativeHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "extauthz_negative_cache_hits_total", Help: "Requests answered with a remembered token request failure.",
		}),
		IdPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_idp_requests_total", Help: "Token requests to the IdP by policy and outcome.",
		}, []string{"policy", "outcome"}),
		IdPRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_idp_requests_refused_total", Help: "Token requests not sent, to protect the IdP, by policy and reason.",
		}, []string{"policy", "reason"}),
		IdPOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "extauthz_idp_open_requests", Help: "Token requests open at the token endpoint.",
		}, []string{"endpoint"}),
		IdPQueued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "extauthz_idp_queued_requests", Help: "Token requests waiting for a place at the token endpoint.",
		}, []string{"endpoint"}),
		IdPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauthz_idp_request_duration_seconds", Help: "Time of token requests, retries included.", Buckets: idpLatency,
		}, []string{"policy"}),
		Refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_token_refreshes_total", Help: "Background token refreshes by result.",
		}, []string{"result"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_config_reloads_total", Help: "Configuration reloads by result.",
		}, []string{"result"}),
		RedisUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "extauthz_redis_up", Help: "1 while the Redis deployment answers, 0 while it is marked down.",
		}, []string{"redis"}),
		RedisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_redis_errors_total", Help: "Failed Redis calls.",
		}, []string{"redis"}),
		PurgeSignalsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_purge_signals_refused_total", Help: "Purge announcements and purge generation counter values in Redis not believed, by reason.",
		}, []string{"reason"}),
		Purges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_tokens_purged_total", Help: "Cached tokens dropped through the admin API, by tier.",
		}, []string{"tier"}),
		CallerConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_caller_connections_total", Help: "Connections to the TLS check listeners by listener and result (accepted, or why the caller was refused).",
		}, []string{"listener", "result"}),
		GRPCStreamsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "extauthz_grpc_streams_refused_total", Help: "gRPC streams refused because the header lists of the open streams reached their bound.",
		}),
		HTTPConnectionsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "extauthz_http_connections_refused_total", Help: "Plain HTTP connections closed because as many as allowed were reading a request's headers at once.",
		}),
	}
}
