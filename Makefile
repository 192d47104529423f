# The two front-door commands. Both work on a fresh machine with a Rust
# toolchain; `setup` installs anything else the build needs.
.PHONY: setup dev test bench clean-dev

setup:
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@command -v m4 >/dev/null || { echo "installing m4 (GMP's bundled build needs it)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq m4; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "installing postgresql (the store tests start a throwaway server)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq postgresql; }
	@scripts/build-gmp.sh
	@python3 -c "import phe" 2>/dev/null || { echo "installing python phe (tests encrypt with it)"; \
	  python3 -m pip install -q phe==1.5.0 || python3 -m pip install -q --break-system-packages phe==1.5.0; }

## Build and start a 3-node cluster on loopback (data in ./.sigil-dev).
dev: setup
	cargo run --release -p sigil-cli --bin sigil -- dev

## Run every test: unit, protocol simulations, store, end-to-end processes.
test: setup
	cargo test --workspace --locked

## Benchmark against a running `make dev` cluster (in another terminal).
bench: setup
	cargo run --release -p sigil-cli --bin sigil -- bench sign

clean-dev:
	rm -rf .sigil-dev
