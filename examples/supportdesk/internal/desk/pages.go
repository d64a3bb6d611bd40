package desk

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed web
var webFS embed.FS

// mountPages serves the customer widget (/), the agent console (/agent) and
// the supervisor view (/supervisor), embedded in the binary.
func mountPages(mux *http.ServeMux) {
	sub, _ := fs.Sub(webFS, "web")
	files := http.FileServerFS(sub)
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, sub, name)
		}
	}
	mux.HandleFunc("GET /{$}", page("customer.html"))
	mux.HandleFunc("GET /agent", page("agent.html"))
	mux.HandleFunc("GET /supervisor", page("supervisor.html"))
	mux.Handle("GET /static/", http.StripPrefix("/static/", files))
}
