package hbbench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// acceptedHistogram is the endpoint's bmctl_heartbeat_accepted_seconds:
// cumulative counts by upper bound, +Inf last.
type acceptedHistogram struct {
	bounds []float64
	counts []uint64
}

// readAccepted reads the histogram from the endpoint's /metrics; ok is
// false when it serves none (the transport ceiling).
func readAccepted(ctx context.Context, endpoint string, caPEM []byte) (h acceptedHistogram, ok bool) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(endpoint, "/")+"/metrics", nil)
	if err != nil {
		return h, false
	}
	resp, err := client.Do(req)
	if err != nil {
		return h, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, false
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return h, false
	}
	mf, found := mfs["bmctl_heartbeat_accepted_seconds"]
	if !found || len(mf.GetMetric()) != 1 {
		return h, false
	}
	hist := mf.GetMetric()[0].GetHistogram()
	for _, b := range hist.GetBucket() {
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, b.GetCumulativeCount())
	}
	h.bounds = append(h.bounds, math.Inf(1))
	h.counts = append(h.counts, hist.GetSampleCount())
	return h, true
}

// quantile is the upper bound of the bucket holding quantile q of what
// was observed between before and h; +Inf past the last bound.
func (h acceptedHistogram) quantile(before acceptedHistogram, q float64) time.Duration {
	if len(before.counts) != len(h.counts) {
		return 0
	}
	total := h.counts[len(h.counts)-1] - before.counts[len(before.counts)-1]
	if total == 0 {
		return 0
	}
	for i := range h.counts {
		if float64(h.counts[i]-before.counts[i]) >= q*float64(total) {
			if math.IsInf(h.bounds[i], 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(h.bounds[i] * float64(time.Second))
		}
	}
	return time.Duration(math.MaxInt64)
}
