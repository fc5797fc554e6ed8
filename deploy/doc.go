// Package deploy holds no code: its tests check the deployment files beside it (the
// Compose stack, the Helm chart, the Dockerfile and the image's build) against the
// service's real settings and behaviour. It lives apart from cmd/iotsupport so that
// compose-go never becomes a dependency of the server binary.
package deploy
