"""The playground's static files (HTML, CSS, ES modules), served by framecast.api.playground_router."""
