//! Saving and loading controller weights as safetensors (f32), with the configuration in the
//! file's metadata.

use super::encoder::Controller;
use super::layers::{LayerNorm, Linear};
use super::ControllerConfig;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Every named tensor of a controller as `(name, shape, values)`, in a fixed order; these
/// are the names of the safetensors file (and of the training mirror's parameters).
pub fn named(c: &Controller) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut lin = |name: String, l: &Linear| {
        out.push((format!("{name}.weight"), vec![l.out, l.inp], l.w.clone()));
        out.push((format!("{name}.bias"), vec![l.out], l.b.clone()));
    };
    lin("proj".into(), &c.proj);
    for (i, l) in c.layers.iter().enumerate() {
        for (n, x) in [
            ("wq", &l.wq),
            ("wk", &l.wk),
            ("wv", &l.wv),
            ("wo", &l.wo),
            ("ff1", &l.ff1),
            ("ff2", &l.ff2),
        ] {
            lin(format!("layers.{i}.{n}"), x);
        }
    }
    for (n, l) in c.head.linears() {
        lin(n.to_string(), l);
    }
    let mut norm = |name: String, l: &LayerNorm| {
        out.push((format!("{name}.gain"), vec![l.g.len()], l.g.clone()));
        out.push((format!("{name}.bias"), vec![l.b.len()], l.b.clone()));
    };
    for (i, l) in c.layers.iter().enumerate() {
        norm(format!("layers.{i}.ln1"), &l.ln1);
        norm(format!("layers.{i}.ln2"), &l.ln2);
    }
    norm("ln_f".into(), &c.ln_f);
    out
}

/// Writes `c` to `path` as safetensors.
pub fn save(c: &Controller, path: &Path) -> Result<()> {
    let tensors = named(c);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, bytemuck::cast_slice(&v).to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Internal(format!("safetensors view {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = serde_json::to_string(&c.config)
        .map_err(|e| Error::Internal(format!("controller config: {e}")))?;
    let meta = HashMap::from([("agentcompress.controller".to_string(), config)]);
    let data = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| Error::Internal(format!("safetensors serialise: {e}")))?;
    std::fs::write(path, data).map_err(|e| Error::io(path, e))
}

/// Reads a controller written by [`save`].
pub fn load(path: &Path) -> Result<Controller> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) =
        SafeTensors::read_metadata(&data).map_err(|e| Error::corrupt(path, e.to_string()))?;
    let cfg_text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("agentcompress.controller"))
        .ok_or_else(|| Error::corrupt(path, "no agentcompress.controller metadata"))?;
    let config: ControllerConfig =
        serde_json::from_str(cfg_text).map_err(|e| Error::corrupt(path, e.to_string()))?;
    let st = SafeTensors::deserialize(&data).map_err(|e| Error::corrupt(path, e.to_string()))?;
    let shapes = named(
        &Controller::new(config.clone(), 0).map_err(|e| Error::corrupt(path, e.to_string()))?,
    );
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    for (name, shape, _) in shapes {
        let t = st
            .tensor(&name)
            .map_err(|_| Error::corrupt(path, format!("missing tensor {name}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(Error::corrupt(
                path,
                format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        values.insert(name, v);
    }
    from_named(config, values).map_err(|e| Error::corrupt(path, e.to_string()))
}

/// Builds a controller of `config` from tensors named as [`named`] gives them (flat values,
/// row-major). A missing tensor or one with the wrong number of values is an error naming it.
pub fn from_named(
    config: ControllerConfig,
    mut values: HashMap<String, Vec<f32>>,
) -> Result<Controller> {
    let mut c = Controller::new(config, 0)?;
    for (name, shape, _) in named(&c) {
        let want: usize = shape.iter().product();
        match values.get(&name) {
            None => return Err(Error::invalid(format!("missing tensor {name}"))),
            Some(v) if v.len() != want => {
                return Err(Error::invalid(format!(
                    "tensor {name} has {} values, expected {want} (shape {shape:?})",
                    v.len()
                )))
            }
            Some(_) => {}
        }
    }
    let values = &mut values;
    let mut lin = |name: &str, l: &mut Linear| {
        fill(values, &format!("{name}.weight"), &mut l.w);
        fill(values, &format!("{name}.bias"), &mut l.b);
    };
    lin("proj", &mut c.proj);
    for (i, l) in c.layers.iter_mut().enumerate() {
        for (n, x) in [
            ("wq", &mut l.wq),
            ("wk", &mut l.wk),
            ("wv", &mut l.wv),
            ("wo", &mut l.wo),
            ("ff1", &mut l.ff1),
            ("ff2", &mut l.ff2),
        ] {
            lin(&format!("layers.{i}.{n}"), x);
        }
    }
    let names: Vec<&'static str> = c.head.linears().iter().map(|(n, _)| *n).collect();
    for (n, l) in names.into_iter().zip(c.head.linears_mut()) {
        lin(n, l);
    }
    let mut norm = |name: &str, l: &mut LayerNorm| {
        fill(values, &format!("{name}.gain"), &mut l.g);
        fill(values, &format!("{name}.bias"), &mut l.b);
    };
    for (i, l) in c.layers.iter_mut().enumerate() {
        norm(&format!("layers.{i}.ln1"), &mut l.ln1);
        norm(&format!("layers.{i}.ln2"), &mut l.ln2);
    }
    norm("ln_f", &mut c.ln_f);
    Ok(c)
}

/// Moves the values named `name` into `dst` (every name was checked present above).
fn fill(values: &mut HashMap<String, Vec<f32>>, name: &str, dst: &mut Vec<f32>) {
    if let Some(v) = values.remove(name) {
        *dst = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_gives_the_same_controller_and_predictions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut c = Controller::new(ControllerConfig::small(8), 4).unwrap();
        c.head.mlp2.b[0] = 0.25;
        c.layers[1].ln2.g[3] = 1.5;
        save(&c, &p).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back, c);
        std::fs::write(&p, b"not a safetensors file").unwrap();
        assert!(load(&p).is_err());
        assert!(load(&dir.path().join("missing")).is_err());
        let mut vals: HashMap<String, Vec<f32>> =
            named(&c).into_iter().map(|(n, _, v)| (n, v)).collect();
        assert_eq!(from_named(c.config.clone(), vals.clone()).unwrap(), c);
        vals.get_mut("ln_f.gain").unwrap().pop();
        let e = from_named(c.config.clone(), vals.clone()).unwrap_err();
        assert!(e.to_string().contains("ln_f.gain"), "{e}");
        vals.remove("proj.weight");
        let e = from_named(c.config.clone(), vals).unwrap_err();
        assert!(e.to_string().contains("proj.weight"), "{e}");
    }
}
