package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/server"
)

// apiClient is the few control API calls the benchmark makes.
type apiClient struct {
	s     *server.Server
	hc    *http.Client
	base  string
	token string
}

func (a *apiClient) login(ctx context.Context) {
	tc, err := auth.PinnedConfig(a.s.Thumbprint())
	must(err)
	a.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	api, _, _ := a.s.Addrs()
	a.base = "https://" + api[0].String()
	var out struct{ Token string }
	must(a.post(ctx, "/api/v1/login", map[string]string{"user": "admin", "password": "sessions bench password"}, &out))
	a.token = out.Token
}

func (a *apiClient) post(ctx context.Context, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", a.base+path, bytes.NewReader(b))
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, data)
	}
	return json.Unmarshal(data, out)
}
