// Package terraform will hold the Terraform provider and modules that create
// cells, their IDCs and the etcd and Consul clusters they rely on. NOT BUILT
// YET: this file only reserves the package and says what it is for.
package terraform
