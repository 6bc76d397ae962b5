package equinix

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// bmctl pages by number rather than following meta.next: Metal's hrefs
// carry the base path (/metal/v1/...), and packngo resolves them against
// its base URL, doubling it (see internal/metalemu's tests).

// pageMeta is the part of Metal's list metadata that paging needs; all of
// it is optional in the description.
type pageMeta struct {
	Total       *int `json:"total"`
	CurrentPage *int `json:"current_page"`
	LastPage    *int `json:"last_page"`
}

// maxPages bounds a listing against an API that never says it is done.
const maxPages = 10000

// listTries bounds how often a listing restarts because the list changed
// while it was paged (a device created or deleted shifts the pages, and a
// device missed that way would look like a discrepancy to the shepherd).
const listTries = 3

// listPages returns the items (the JSON array under key) of every page of
// a project list endpoint, within ListTimeout. Each page's metadata is
// checked against the others and against what was asked: an answer that
// cannot be true fails the listing with ErrInconsistent, saying what.
func (p *Provider) listPages(ctx context.Context, op, endpoint, key string, query url.Values) ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, p.cfg.ListTimeout, fmt.Errorf("the listing timeout of %v ran out", p.cfg.ListTimeout))
	defer cancel()
	for range listTries {
		items, changed, err := p.listOnce(ctx, op, endpoint, key, query)
		if err != nil || !changed {
			return items, err
		}
	}
	return nil, fmt.Errorf("equinix: %s: the list changed while being paged (meta.total differed between pages), %d times in a row", op, listTries)
}

func (p *Provider) listOnce(ctx context.Context, op, endpoint, key string, query url.Values) (all []json.RawMessage, changed bool, err error) {
	per := p.cfg.PageSize
	total, size := 0, 0 // as page 1 says: items in all, and on each page but the last
	for page := 1; ; page++ {
		if page > maxPages {
			return nil, false, fmt.Errorf("equinix: %s: more than %d pages", op, maxPages)
		}
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		q.Set("page", strconv.Itoa(page))
		q.Set("per_page", strconv.Itoa(per))
		path := endpoint + "?" + q.Encode()
		c := call{op: op, api: "GET /" + path}
		items, meta, err := p.getPage(ctx, c, path, key)
		if err != nil {
			return nil, false, err
		}
		all = append(all, items...)
		n := len(items)
		odd := func(format string, args ...any) ([]json.RawMessage, bool, error) {
			return nil, false, inconsistent(c, fmt.Sprintf(format, args...))
		}
		if n > per {
			return odd("page %d has %d item(s), more than the %d asked for", page, n, per)
		}
		if meta.Total == nil || meta.LastPage == nil {
			// No paging metadata: a short page is the last.
			if n < per {
				return all, false, nil
			}
			continue
		}
		t, last := *meta.Total, *meta.LastPage
		if t == 0 && last == 0 && n == 0 {
			return all, false, nil // an empty list, said to have no pages
		}
		// Each thing that cannot be true, all in one line.
		var wrong []string
		if t < 0 {
			wrong = append(wrong, fmt.Sprintf("meta.total is %d", t))
		}
		if t == 0 && n > 0 {
			wrong = append(wrong, fmt.Sprintf("meta.total is 0 but page %d has %d item(s)", page, n))
		}
		if last < 1 {
			wrong = append(wrong, fmt.Sprintf("meta.last_page is %d", last))
		}
		if meta.CurrentPage != nil && *meta.CurrentPage != page {
			wrong = append(wrong, fmt.Sprintf("meta.current_page is %d on page %d", *meta.CurrentPage, page))
		}
		if len(wrong) > 0 {
			return odd("%s", strings.Join(wrong, "; "))
		}
		if page == 1 {
			// The API may page by fewer than asked: page 1, if not the
			// last, says by how many.
			total, size = t, per
			if last > 1 {
				size = n
			}
			if size == 0 {
				return odd("page 1 is empty but meta.last_page is %d", last)
			}
		} else if t != total {
			return nil, true, nil
		}
		if want := max(1, (t+size-1)/size); last != want {
			return odd("meta.last_page is %d, but meta.total %d at %d a page makes %d page(s)", last, t, size, want)
		}
		if page < last {
			if n != size {
				return odd("page %d of %d has %d item(s), page 1 had %d", page, last, n, size)
			}
			continue
		}
		if want := t - (last-1)*size; n != want {
			return odd("page %d, the last, has %d item(s), but meta.total %d says %d", page, n, t, want)
		}
		return all, false, nil
	}
}

// getPage gets one page: its items and its metadata.
func (p *Provider) getPage(ctx context.Context, c call, path, key string) ([]json.RawMessage, pageMeta, error) {
	var root map[string]json.RawMessage
	var meta pageMeta
	if err := p.getJSON(ctx, c, path, &root); err != nil {
		return nil, meta, err
	}
	var items []json.RawMessage
	if raw, ok := root[key]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, meta, inconsistent(c, fmt.Sprintf("%q is not a list", key))
		}
	}
	if raw, ok := root["meta"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, meta, inconsistent(c, "meta: "+fieldError(err))
		}
	}
	return items, meta, nil
}
