package replogprom_test

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/replog/replog"
	"github.com/replog/replog/replogprom"
)

// A program that embeds a Log serves its metrics at /metrics, next to
// the Go runtime's and the process's that the default registry holds.
func ExampleNewCollector() {
	l, err := replog.Open("/var/lib/myapp/replog", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	prometheus.MustRegister(replogprom.NewCollector(l))
	http.Handle("/metrics", promhttp.Handler())
	if err := http.ListenAndServe(":2112", nil); err != nil {
		log.Print(err) // and l.Close runs
	}
}
