// Package replogweb serves a read-only status page for a [replog.Log], as
// net/http/pprof serves profiles: the host mounts [Handler] wherever it
// likes on its own server.
//
//	mux := http.NewServeMux()
//	mux.Handle("/replog/", http.StripPrefix("/replog", replogweb.Handler(l)))
//	go http.ListenAndServe("localhost:8080", mux)
//
// The page at the mount point ("/replog/" above) shows the node (id,
// directory, disk use, open handles, elections, apply and sync latency),
// its topics and partitions (leader, replicas, offsets, stored bytes), the
// consumer groups (generation, members, committed offset and lag per
// partition), the share groups if any (members holding locks, start
// offset, lag, acquired and available records per partition), and plots of the produce rate, the fetch rate and each
// group's lag over the last 10 minutes. It is plain HTML rendered on the
// server, with inline CSS and SVG: no script, no external asset, so it
// works offline. It reloads itself every 5 seconds; ?refresh=N changes
// that (0 turns it off).
//
// Beside it, for scripts:
//
//   - stats.json is [replog.Log.Stats] as of the request, the fields under
//     their Go names (durations in nanoseconds);
//   - history.json is the sampled history, oldest first:
//     {"IntervalSeconds": 1, "Samples": [{"Time": ..., "ProducedRecordsPerSec":
//     ..., "ProducedBytesPerSec": ..., "FetchedRecordsPerSec": ...,
//     "FetchedBytesPerSec": ..., "Lag": {"group": records}}]}.
//
// The rates count this node's producers and consumers (the counters of
// [replog.NodeStats]); the lags are as this node sees the high watermarks.
//
// # Sampling
//
// [Handler] starts one goroutine that takes [replog.Log.Stats] every second
// and keeps the last 600 samples in a fixed ring; rates are the growth of
// the counters between two samples. The goroutine ends when the Log closes
// ([replog.Log.Done]). Call Handler once per Log: each call starts its own
// sampler.
//
// # Access
//
// The handler answers only GET and HEAD (405 otherwise) and offers no
// action, but it shows topic and group names, node ids, the data directory
// and traffic figures. It has no authentication of its own: mount it on a
// listener only operators reach, or wrap it in the host's middleware, for
// example HTTP basic authentication:
//
//	func basicAuth(user, pass string, h http.Handler) http.Handler {
//		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//			u, p, ok := r.BasicAuth()
//			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 ||
//				subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
//				w.Header().Set("WWW-Authenticate", `Basic realm="replog"`)
//				http.Error(w, "unauthorized", http.StatusUnauthorized)
//				return
//			}
//			h.ServeHTTP(w, r)
//		})
//	}
//
//	mux.Handle("/replog/", basicAuth("ops", secret, http.StripPrefix("/replog", replogweb.Handler(l))))
//
// The handler is safe for concurrent use.
package replogweb
