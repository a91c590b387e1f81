package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Int("rate", 5000, "requests per second")
	dur := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "concurrent connections (workers)")
	header := flag.String("H", "", "one request header, \"Name: value\"")
	flag.Parse()
	if *url == "" || *rate <= 0 || *conns <= 0 || *dur <= 0 || *dur > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "rate: want -url, a positive -rate and -conns, and -duration up to 10m")
		os.Exit(2)
	}
	name, value, _ := strings.Cut(*header, ":")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}, Timeout: 10 * time.Second}

	due := make(chan time.Time, *conns)
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, (*rate)*int(dur.Seconds()+1)/(*conns))
			bad := 0
			for at := range due {
				req, _ := http.NewRequest(http.MethodGet, *url, nil)
				if name != "" {
					req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
				}
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					bad++
					continue
				}
				local = append(local, time.Since(at))
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += bad
			mu.Unlock()
		}()
	}
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	next := start
	for end := start.Add(*dur); next.Before(end); {
		for now := time.Now(); !next.After(now) && next.Before(end); next = next.Add(interval) {
			due <- next // blocks when every worker is busy: the wait counts as latency
		}
		time.Sleep(interval)
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }
	fmt.Printf("requests %d errors %d rate %.0f/s p50_ms %s p90_ms %s p99_ms %s p999_ms %s\n",
		len(lat), errs, float64(len(lat))/elapsed.Seconds(), ms(pct(.5)), ms(pct(.9)), ms(pct(.99)), ms(pct(.999)))
}
