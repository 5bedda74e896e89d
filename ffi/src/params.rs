//! Parameter structs that can grow without breaking hosts. Each begins with `size`, the bytes
//! of the struct as the host was compiled: the library reads only that many bytes (fields a
//! newer library added keep their defaults for an older host) and refuses a size of 0 or one
//! below the first published layout, so a struct the host never initialised is an error rather
//! than garbage read as options.

use crate::args::out_ptr;
use ac::{Error, Result};

/// A parameter struct whose first field is `size: usize` (`size_t size` in C).
pub(crate) trait SizedParams: Copy {
    /// The struct's C name (named in errors).
    const NAME: &'static str;
    /// Bytes of the first published layout: the smallest `size` accepted.
    const MIN_SIZE: usize;
    /// The library's defaults, `size` set to the library's own struct size.
    fn defaults() -> Self;
    /// Sets the `size` field.
    fn set_size(&mut self, size: usize);
}

/// Checks a host's `size` against what the library can read.
fn check_size<T: SizedParams>(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid(format!(
            "params->size is 0: initialise the {0} with {0}_init() or the default-params \
             function, which set size",
            T::NAME
        )));
    }
    if size < T::MIN_SIZE {
        return Err(Error::invalid(format!(
            "params->size is {size}, smaller than the smallest {} ({} bytes)",
            T::NAME,
            T::MIN_SIZE
        )));
    }
    Ok(())
}

/// The parameters at `ptr`: the defaults when NULL, else the host's first `params->size` bytes
/// over the defaults. Bytes past the library's own struct (a host built against a newer
/// header) must be zero, i.e. options this library does not know left unset.
///
/// # Safety
/// `ptr` is NULL or points to a struct whose first field is `size` and which is readable for
/// `size` bytes.
pub(crate) unsafe fn read_params<T: SizedParams>(ptr: *const T) -> Result<T> {
    if ptr.is_null() {
        return Ok(T::defaults());
    }
    // SAFETY: the first field is a size_t per the contract.
    let size = unsafe { ptr.cast::<usize>().read() };
    check_size::<T>(size)?;
    let ours = std::mem::size_of::<T>();
    let bytes = ptr.cast::<u8>();
    if size > ours {
        // SAFETY: readable for `size` bytes per the contract.
        let extra = unsafe { std::slice::from_raw_parts(bytes.add(ours), size - ours) };
        if let Some(at) = extra.iter().position(|&b| b != 0) {
            return Err(Error::invalid(format!(
                "params->size is {size} but this library's {} has {ours} bytes, and byte {} \
                 beyond them is set (an option this library does not know)",
                T::NAME,
                ours + at
            )));
        }
    }
    let mut out = T::defaults();
    // SAFETY: `min(size, ours)` bytes are readable at `ptr` and writable in `out`; both are
    // the same layout up to there, and a plain byte copy carries padding as it is.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes, (&mut out as *mut T).cast::<u8>(), size.min(ours))
    };
    out.set_size(ours);
    Ok(out)
}

/// Writes the defaults into the host's struct of `size` bytes at `ptr` (zeroing bytes past the
/// library's own struct) and sets its `size` field to `size`.
///
/// # Safety
/// `ptr` is NULL or writable for `size` bytes.
pub(crate) unsafe fn init_params<T: SizedParams>(ptr: *mut T, size: usize) -> Result<()> {
    let ptr = out_ptr(ptr, "params")?;
    check_size::<T>(size)?;
    let ours = std::mem::size_of::<T>();
    let mut d = T::defaults();
    d.set_size(size);
    let bytes = ptr.cast::<u8>();
    // SAFETY: writable for `size` bytes per the contract; the first `min(size, ours)` come
    // from the defaults, the rest are zeroed.
    unsafe {
        std::ptr::copy_nonoverlapping((&d as *const T).cast::<u8>(), bytes, size.min(ours));
        if size > ours {
            std::ptr::write_bytes(bytes.add(ours), 0, size - ours);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first published layout.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V1 {
        size: usize,
        a: u64,
    }

    /// The same struct one release later, with a field appended.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V2 {
        size: usize,
        a: u64,
        b: u64,
    }

    impl SizedParams for V2 {
        const NAME: &'static str = "v2_params";
        const MIN_SIZE: usize = std::mem::size_of::<V1>();
        fn defaults() -> Self {
            V2 {
                size: std::mem::size_of::<V2>(),
                a: 1,
                b: 7,
            }
        }
        fn set_size(&mut self, size: usize) {
            self.size = size;
        }
    }

    fn read<P>(p: &P) -> Result<V2> {
        unsafe { read_params((p as *const P).cast::<V2>()) }
    }

    #[test]
    fn an_older_host_struct_reads_with_defaults_for_the_new_fields() {
        let old = V1 {
            size: std::mem::size_of::<V1>(),
            a: 5,
        };
        let got = read(&old).unwrap();
        assert_eq!((got.a, got.b), (5, 7));
        let mut cur = V2::defaults();
        cur.b = 9;
        assert_eq!(read(&cur).unwrap().b, 9);
        assert_eq!(unsafe { read_params::<V2>(std::ptr::null()) }.unwrap().b, 7);
    }

    #[test]
    fn zero_short_or_unknown_set_sizes_are_errors() {
        let e = read(&V1 { size: 0, a: 5 }).unwrap_err().to_string();
        assert!(e.contains("params->size is 0"), "{e}");
        let e = read(&V1 { size: 8, a: 5 }).unwrap_err().to_string();
        assert!(
            e.contains("params->size is 8") && e.contains("16 bytes"),
            "{e}"
        );
        // A host built against a newer header: zero extra bytes are fine, set ones are not.
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct V3 {
            v2: V2,
            c: u64,
        }
        let mut newer = V3 {
            v2: V2 {
                size: std::mem::size_of::<V3>(),
                a: 2,
                b: 3,
            },
            c: 0,
        };
        assert_eq!(read(&newer).unwrap().b, 3);
        newer.c = 1;
        let e = read(&newer).unwrap_err().to_string();
        assert!(e.contains("byte 24"), "{e}");
    }

    #[test]
    fn init_fills_the_hosts_size_and_zeroes_the_rest() {
        let mut old = V1 { size: 0, a: 0 };
        unsafe {
            init_params(
                (&mut old as *mut V1).cast::<V2>(),
                std::mem::size_of::<V1>(),
            )
        }
        .unwrap();
        assert_eq!(old, V1 { size: 16, a: 1 });
        let mut big = [0xffu8; 32];
        unsafe { init_params(big.as_mut_ptr().cast::<V2>(), 32) }.unwrap();
        assert_eq!(&big[..8], &32usize.to_ne_bytes());
        assert_eq!(&big[16..24], &7u64.to_ne_bytes());
        assert_eq!(&big[24..], &[0u8; 8]);
        let mut v = V2::defaults();
        assert!(unsafe { init_params(&mut v, 4) }.is_err());
        assert!(unsafe { init_params(std::ptr::null_mut::<V2>(), 24) }.is_err());
    }
}
