# bklog on Nomad: the web tier (registered in Consul by Nomad, checked on /health/ready and
# scaled by the Nomad Autoscaler), one group per worker role, and two beats of which one sends.
#
#   nomad job run -var image=registry.example.com/bklog:0.1.0 support-files/nomad/bklog.nomad.hcl
#
# Configuration comes from Consul KV / Vault through the `template` blocks; adjust the paths.
# Nomad registers the services itself, so Gunicorn's own Consul registration is off here.
#
# Cluster mode (docs/operations.md#the-deployment-files-in-cluster-mode): the same job, with these
# keys in Consul KV (REDIS_URL and CELERY_BROKER_URL in Vault if the Sentinels need a password).
# CHANGE the hosts to yours: the ClickHouse servers as in their remote_servers (shard by shard),
# the same order for every allocation; CLICKHOUSE_CLUSTER is that cluster's name.
#   consul kv put bklog/config/CLICKHOUSE_CLUSTER bklog
#   consul kv put bklog/config/CLICKHOUSE_HOST clickhouse-s1r1.service.consul
#   consul kv put bklog/config/CLICKHOUSE_ALT_HOSTS clickhouse-s1r2.service.consul:9000,clickhouse-s2r1.service.consul:9000,clickhouse-s2r2.service.consul:9000
#   consul kv put bklog/config/REDIS_URL 'sentinel://sentinel-1.service.consul:26379;sentinel://sentinel-2.service.consul:26379;sentinel://sentinel-3.service.consul:26379/0'
#   consul kv put bklog/config/CELERY_BROKER_URL 'sentinel://sentinel-1.service.consul:26379;sentinel://sentinel-2.service.consul:26379;sentinel://sentinel-3.service.consul:26379/0'
#   consul kv put bklog/config/REDIS_SENTINEL_MASTER bklog
#   consul kv put bklog/config/REDIS_WAIT_REPLICAS 1
# Then `migrate` (the web group's prestart task) creates the replicated tables ON CLUSTER;
# copy a single server's events in once with `manage.py copy_events_to_cluster`
# (docs/operations.md#growing-from-one-node-to-the-cluster).

variable "image" {
  type    = string
  default = "bklog:0.1.0"
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "bklog" {
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel      = 1
    min_healthy_time  = "15s"
    healthy_deadline  = "5m"
    progress_deadline = "10m"
    health_check      = "checks"
    auto_revert       = true
    canary            = 0
    stagger           = "30s"
  }

  group "web" {
    count = 2

    network {
      port "http" {
        to = 8000
      }
    }

    scaling {
      enabled = true
      min     = 2
      max     = 10

      policy {
        cooldown            = "2m"
        evaluation_interval = "30s"

        check "cpu" {
          source = "nomad-apm"
          query  = "avg_cpu-allocated"

          strategy "target-value" {
            target = 70
          }
        }
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name = "bklog-api"
      port = "http"
      tags = ["bklog", "web", "metrics"]

      meta {
        version = "0.1.0"
      }

      check {
        name     = "bklog-api readiness (/health/ready)"
        type     = "http"
        path     = "/health/ready"
        interval = "10s"
        timeout  = "5s"

        check_restart {
          limit = 6
          grace = "60s"
        }
      }

      check {
        name     = "bklog-api liveness (/_health)"
        type     = "http"
        path     = "/_health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "migrate" {
      driver = "docker"

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      config {
        image = var.image
        args  = ["migrate"]
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }

    task "web" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "40s"

      config {
        image = var.image
        args  = ["web"]
        ports = ["http"]
      }

      env {
        GUNICORN_WORKERS = "4"
        CONSUL_ENABLED   = "false"
        LOG_FORMAT       = "json"
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }

  group "worker-ingestion" {
    count = 2

    network {
      port "metrics" {
        to = 9101
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name = "bklog-worker"
      port = "metrics"
      tags = ["bklog", "worker", "role-ingestion"]

      check {
        type     = "tcp"
        interval = "15s"
        timeout  = "3s"
      }
    }

    task "worker" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "120s"

      config {
        image = var.image
        args  = ["worker", "ingestion"]
        ports = ["metrics"]
      }

      env {
        BKLOG_WORKER_CONCURRENCY  = "4"
        BKLOG_WORKER_METRICS_PORT = "9101"
        LOG_FORMAT                = "json"
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 2000
        memory = 2048
      }
    }
  }

  group "worker-ingestion-overflow" {
    count = 1

    network {
      port "metrics" {
        to = 9101
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name = "bklog-worker"
      port = "metrics"
      tags = ["bklog", "worker", "role-ingestion_overflow"]

      check {
        type     = "tcp"
        interval = "15s"
        timeout  = "3s"
      }
    }

    task "worker" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "120s"

      config {
        image = var.image
        args  = ["worker", "ingestion_overflow"]
        ports = ["metrics"]
      }

      env {
        BKLOG_WORKER_CONCURRENCY  = "2"
        BKLOG_WORKER_METRICS_PORT = "9101"
        LOG_FORMAT                = "json"
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 2000
        memory = 2048
      }
    }
  }

  group "worker-async" {
    count = 1

    network {
      port "metrics" {
        to = 9101
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name = "bklog-worker"
      port = "metrics"
      tags = ["bklog", "worker", "role-async"]

      check {
        type     = "tcp"
        interval = "15s"
        timeout  = "3s"
      }
    }

    task "worker" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "120s"

      config {
        image = var.image
        args  = ["worker", "async"]
        ports = ["metrics"]
      }

      env {
        BKLOG_WORKER_CONCURRENCY  = "2"
        BKLOG_WORKER_METRICS_PORT = "9101"
        LOG_FORMAT                = "json"
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }

  group "worker-scheduler" {
    count = 1

    network {
      port "metrics" {
        to = 9101
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name = "bklog-worker"
      port = "metrics"
      tags = ["bklog", "worker", "role-scheduler"]

      check {
        type     = "tcp"
        interval = "15s"
        timeout  = "3s"
      }
    }

    task "worker" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "120s"

      config {
        image = var.image
        args  = ["worker", "scheduler"]
        ports = ["metrics"]
      }

      env {
        BKLOG_WORKER_CONCURRENCY  = "1"
        BKLOG_WORKER_METRICS_PORT = "9101"
        LOG_FORMAT                = "json"
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }

  group "beat" {
    # Two, on different clients where there are: the one holding the Redis lease sends the
    # schedule (bklog_app/beat_leader.py), the other takes over within BEAT_LEADER_TTL_SECONDS
    # when it is lost. Every periodic task also takes a Redis lock, so nothing runs twice.
    count = 2

    spread {
      attribute = "${node.unique.id}"
    }

    update {
      max_parallel = 1
      canary       = 0
    }

    restart {
      attempts = 10
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    task "beat" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = var.image
        args  = ["beat"]
      }

      env {
        LOG_FORMAT = "json"
      }

      template {
        data        = <<-EOT
          {{ range ls "bklog/config" }}{{ .Key }}={{ .Value | toJSON }}
          {{ end }}
        EOT
        destination = "secrets/bklog.env"
        env         = true
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
