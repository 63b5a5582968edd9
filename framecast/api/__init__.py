"""HTTP routers: thin translations between fal's wire format and `framecast.service`."""
